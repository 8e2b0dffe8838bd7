"""The paychaos Chaos Toolkit extension: ``chaos discover paychaos`` lists its actions and probes."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["discover"]


def discover(discover_system: bool = True) -> dict[str, Any]:
    """Describe the paychaos actions (faults) and probes (checks) for Chaos Toolkit.

    No system discovery: the target is whatever stack the run directory points at.
    """
    from chaoslib.discovery.discover import discover_actions, discover_probes, initialize_discovery_result

    try:
        release = version("paychaos")
    except PackageNotFoundError:
        release = "unknown"
    discovery = initialize_discovery_result("paychaos", release, "paychaos")
    discovery["activities"].extend(discover_actions("paychaos.ctk.actions"))
    discovery["activities"].extend(discover_probes("paychaos.ctk.probes"))
    return discovery

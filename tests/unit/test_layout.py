"""The repository layout keeps its promises (ARCHITECTURE §1)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_top_level_folder_is_an_importable_package() -> None:
    # A top-level `platform/__init__.py` would shadow the standard library's platform module.
    offenders = [p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    assert offenders == []


def test_requested_top_level_folders_exist() -> None:
    for name in ("experiments", "probes", "runbooks", "platform", "cli", "tests", "benchmarks", "src/paychaos"):
        assert (ROOT / name).is_dir(), name


# -- layers (ARCHITECTURE §1): cli → experiments → targets → faults/probes ----------------------

import ast  # noqa: E402

SRC = ROOT / "src"
# The CLI commands that start, stop or drive the reference stack itself (they are its stack CLI).
STACK_CLI = {"paychaos.cli.stack", "paychaos.cli.demo", "paychaos.cli.gate", "paychaos.cli.load"}


def _imports() -> dict[str, set[str]]:
    """Every module of the package and the paychaos modules it imports (at any depth of its code)."""
    found: dict[str, set[str]] = {}
    for path in sorted((SRC / "paychaos").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.update([node.module] + [f"{node.module}.{a.name}" for a in node.names])
        found[module] = {n for n in names if n == "paychaos" or n.startswith("paychaos.")}
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


IMPORTS = _imports()


def test_only_the_local_target_and_the_stack_cli_import_the_reference_platform() -> None:
    offenders = sorted(
        f"{module} imports {name}"
        for module, names in IMPORTS.items()
        for name in names
        if _within(name, "paychaos.platform")
        and not (_within(module, "paychaos.platform") or _within(module, "paychaos.targets.local") or module in STACK_CLI)
    )
    assert offenders == []


def test_the_engine_reaches_drivers_only_through_the_targets_seam() -> None:
    # A driver is a target's (paychaos.targets.<platform>); the engine asks paychaos.targets for one.
    engine = ("paychaos.experiments", "paychaos.ctk", "paychaos.faults", "paychaos.probes", "paychaos.load",
              "paychaos.reporting", "paychaos.runbooks")
    offenders = sorted(
        f"{module} imports {name}"
        for module, names in IMPORTS.items()
        if any(_within(module, p) for p in engine)
        for name in names
        if any(_within(name, t) for t in IMPORTS if t.startswith("paychaos.targets."))  # a target's own package
    )
    assert offenders == []


# The spec models are the language every layer speaks (a fault to plan, a check to judge).
SHARED = ("paychaos.experiments.spec",)


def test_lower_layers_do_not_import_upper_ones() -> None:
    upper = {
        "paychaos.faults": ("paychaos.experiments", "paychaos.ctk", "paychaos.targets", "paychaos.cli"),
        "paychaos.probes": ("paychaos.experiments", "paychaos.ctk", "paychaos.targets", "paychaos.cli", "paychaos.faults"),
        "paychaos.targets": ("paychaos.experiments", "paychaos.ctk", "paychaos.cli"),
    }
    offenders = sorted(
        f"{module} imports {name}"
        for module, names in IMPORTS.items()
        for layer, forbidden in upper.items()
        if _within(module, layer)
        for name in names
        if any(_within(name, f) for f in forbidden) and not any(_within(name, shared) for shared in SHARED)
    )
    assert offenders == []

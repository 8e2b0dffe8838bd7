"""The one interface every fault driver implements (local processes now, Kubernetes later).

A driver observes the target, executes a plan it did not choose, and reverts from the ledger
record alone, so that a process that did not inject the fault (``paychaos halt``) can undo it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from paychaos.faults.planning import FaultPlan, Observed, PartitionRef

if TYPE_CHECKING:
    from paychaos.faults.records import FaultRecord


class TargetUnreachable(Exception):
    """The target cannot be observed or changed (no stack running, API unreachable): bring it up first."""


class InjectionFailed(Exception):
    """Injecting did not complete. Raised out of ``records.inject`` only after what was done is reverted."""


class RevertFailed(Exception):
    """A revert did not complete; the ledger record is kept: retry with `paychaos halt`."""


class FaultDriver(Protocol):
    #: Written into each ledger record, so that a record is reverted by the kind of driver that made it.
    name: str

    def observe(self, partitions: Sequence[PartitionRef] = ()) -> Observed:
        """Snapshot the target, including the leaders of ``partitions`` (see ``planning.partitions_needed``)."""
        ...

    def inject(self, plan: FaultPlan) -> dict[str, Any]:
        """Do what the plan says, then look: the effect it saw (the proof the fault happened).
        Raises ``InjectionFailed`` when the effect is not there, ``TargetUnreachable`` or any
        error otherwise; the caller reverts."""
        ...

    def revert(self, record: FaultRecord) -> None:
        """Undo the recorded fault; safe to run twice, and on a fault only half injected. Raises ``RevertFailed``."""
        ...

    def verify_reverted(self, record: FaultRecord) -> bool:
        """True once the target is whole again as far as this fault is concerned."""
        ...

"""`paychaos controller`: the operator that runs ``ChaosExperiment`` objects (kopf).

Each experiment object gets a kopf daemon, which runs it once per generation as its own
`paychaos run` process (the same engine, journal and verdict as the CLI), against the Kubernetes
target of ``spec.target.namespace`` (the object's own namespace by default), and writes progress
and the verdict to the object's status, with Events on the way.

What never leaks:
- Deleting an object mid-run: kopf's finalizer keeps it until its daemon has stopped the run
  (SIGTERM: the run reverts its faults, as on Ctrl-C) and halted whatever the namespace's fault
  ledger still holds.
- A controller that stops or is killed mid-run: the run is a process of its own and goes on
  (reverting its faults at its end). The controller that starts next finds it by the pid and start
  time kept on the object and waits for it (it resumes); when that process is gone too, it reverts
  what the ledger holds and ends the object as `error`, saying why.
- A namespace without the opt-in label is refused (phase Refused, the reason in status and an Event).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kopf
import psutil
import yaml

from paychaos.experiments.resources import GROUP, Status
from paychaos.faults import records
from paychaos.processes import alive, last_line
from paychaos.reporting.journals import JournalError, read_run
from paychaos.targets.kubernetes import KubernetesTarget, api_client

VERSION = "v1alpha1"
FINALIZER = f"{GROUP}/revert-faults"
RUN_ANNOTATION = f"{GROUP}/run"  # {"pid", "started", "generation", "journal"} of the run in progress
STOP_TIMEOUT = 90.0  # seconds a stopped run gets to revert its faults before SIGKILL
JOURNALS_ENV = "PAYCHAOS_CONTROLLER_JOURNALS"


def journals_dir() -> Path:
    return Path(os.environ.get(JOURNALS_ENV, ".paychaos/controller")).expanduser().resolve()


@kopf.on.startup()
def _configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    # Kopf's own bookkeeping in annotations: the status schema is ours and prunes unknown fields.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60
    # A daemon told to stop (its object deleted) stops the run and reverts, then returns: kopf waits
    # for that rather than checking again only after the cancellation backoff (two minutes).
    settings.background.instant_exit_timeout = STOP_TIMEOUT + 10


class _Object:
    """One ChaosExperiment object, as the daemon reads and writes it (through the API, not kopf's
    patch: a daemon's patches are not applied while it runs)."""

    def __init__(self, name: str, namespace: str) -> None:
        from kubernetes import client

        self.name, self.namespace = name, namespace
        self.api = api_client()
        self.objects = client.CustomObjectsApi(self.api)

    def read(self) -> dict[str, Any]:
        return self.objects.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "chaosexperiments", self.name)

    def status(self, **fields: Any) -> None:
        status = Status(**fields).model_dump(by_alias=True, exclude_none=True)
        self.objects.patch_namespaced_custom_object_status(GROUP, VERSION, self.namespace, "chaosexperiments",
                                                           self.name, {"status": status})

    def annotate(self, value: str | None) -> None:
        self.objects.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, "chaosexperiments", self.name,
                                                    {"metadata": {"annotations": {RUN_ANNOTATION: value}}})


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# On deletion the daemon is only signalled (`stopped`) for the backoff: it stops the run and reverts
# within it, then returns. Without a backoff kopf cancels at once a thread it cannot interrupt.
@kopf.daemon(GROUP, VERSION, "chaosexperiments", cancellation_backoff=STOP_TIMEOUT + 30, cancellation_timeout=30)
def experiment(stopped: kopf.DaemonStopped, name: str, namespace: str, body: kopf.Body, logger: logging.Logger,
               **_: Any) -> None:
    obj = _Object(name, namespace)
    current = obj.read()
    generation = current["metadata"].get("generation")
    status = current.get("status") or {}
    annotations = current["metadata"].get("annotations") or {}
    target_namespace = (current.get("spec", {}).get("target") or {}).get("namespace") or namespace
    target = KubernetesTarget(target_namespace, obj.api)
    if status.get("phase") in ("Finished", "Refused") and status.get("observedGeneration") == generation:
        return  # judged already; a new generation (an edited spec) runs again
    if RUN_ANNOTATION in annotations:
        run = json.loads(annotations[RUN_ANNOTATION])
        if alive(run["pid"], run["started"]):
            kopf.info(body, reason="Resumed", message=f"the run (pid {run['pid']}) outlived a controller restart: waiting for it")
            _follow(obj, body, run, target, stopped, logger)
            return
        reverted = _halt(target)
        obj.annotate(None)
        reason = ("the controller stopped while the run was in progress and the run is gone too; "
                  f"{len(reverted)} fault(s) it left were reverted: apply the experiment again to rerun it")
        obj.status(phase="Finished", verdict="error", reason=reason, finished_at=_now(), observed_generation=run["generation"])
        kopf.warn(body, reason="Interrupted", message=reason)
        return
    refused = target.driver().opted_in()
    if refused is not None:
        obj.status(phase="Refused", reason=refused, observed_generation=generation)
        kopf.warn(body, reason="Refused", message=refused)
        return
    run = _start(obj, current, target, generation)
    kopf.info(body, reason="Started", message=f"running against namespace {target_namespace} (pid {run['pid']})")
    _follow(obj, body, run, target, stopped, logger)


def _start(obj: _Object, current: dict[str, Any], target: KubernetesTarget, generation: int | None) -> dict[str, Any]:
    folder = journals_dir() / obj.namespace / f"{obj.name}-{generation}"
    folder.mkdir(parents=True, exist_ok=True)
    spec_file, journal = folder / "experiment.yaml", folder / "journal.json"
    document = {k: current[k] for k in ("apiVersion", "kind", "spec")}
    document["metadata"] = {"name": obj.name, **({"labels": current["metadata"]["labels"]}
                                                 if current["metadata"].get("labels") else {})}
    spec_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    with open(folder / "run.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "paychaos.cli", "run", str(spec_file), "--journal", str(journal),
             "--target-arguments", json.dumps(target.arguments())],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,  # in our folder: probes/ is found as by the CLI
            start_new_session=True)  # a controller killed mid-run does not take the run (and its reverts) with it
    run = {"pid": proc.pid, "started": psutil.Process(proc.pid).create_time(), "generation": generation,
           "journal": str(journal), "log": str(folder / "run.log")}
    _children[proc.pid] = proc
    obj.annotate(json.dumps(run))
    obj.status(phase="Running", started_at=_now(), journal=str(journal), observed_generation=generation)
    return run


# Runs this controller started, so that each is reaped when it ends (an adopted one is not ours).
_children: dict[int, subprocess.Popen[bytes]] = {}


def _follow(obj: _Object, body: kopf.Body, run: dict[str, Any], target: KubernetesTarget,
            stopped: kopf.DaemonStopped, logger: logging.Logger) -> None:
    """Wait for the run to end and write its verdict; stop it first if the object is deleted."""
    while _running(run):
        if stopped.wait(1.0):
            if stopped.reason is not None and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED:
                logger.info("deleted mid-run: stopping the run (pid %s)", run["pid"])
                _stop(run, logger)
                reverted = _halt(target)
                logger.info("the run stopped; %d fault(s) it left reverted", len(reverted))
            else:
                logger.info("the controller is stopping (%s): the run (pid %s) goes on", stopped.reason, run["pid"])
            return  # the controller is exiting: the run goes on, and the next controller resumes it
    _finish(obj, body, run)


def _running(run: dict[str, Any]) -> bool:
    child = _children.get(run["pid"])
    if child is not None and child.poll() is not None:
        del _children[run["pid"]]
    return alive(run["pid"], run["started"])


def _stop(run: dict[str, Any], logger: logging.Logger) -> None:
    try:
        os.kill(run["pid"], signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while _running(run) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _running(run):
        logger.warning("the run (pid %s) did not stop in %.0fs after SIGTERM: killing it", run["pid"], STOP_TIMEOUT)
        os.kill(run["pid"], signal.SIGKILL)


def _halt(target: KubernetesTarget) -> list[records.FaultRecord]:
    try:
        return records.halt(target.ledger(), target.driver())
    except records.HaltIncomplete as exc:
        return exc.reverted


def _finish(obj: _Object, body: kopf.Body, run: dict[str, Any]) -> None:
    path = Path(run["journal"])
    unreadable = ""
    try:
        journal = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
        outcome = read_run(obj.name, journal)
    except (OSError, ValueError, JournalError) as exc:
        journal, outcome, unreadable = None, read_run(obj.name, None), f" (the journal could not be read: {exc})"
    reason = outcome.verdict.reason + unreadable
    if journal is None:
        reason = f"{reason}; the run's last words: {last_line(Path(run['log']))}"
    obj.status(phase="Finished", verdict=outcome.verdict.result, reason=reason[:1000], started_at=None,
               finished_at=_now(), time_to_detect=outcome.times.time_to_detect, recovery_time=outcome.times.recovery_time,
               failed_checks=[c.label for c in outcome.failed_checks], journal=str(path),
               observed_generation=run["generation"])
    obj.annotate(None)
    message = f"{outcome.verdict.result}: {reason}"[:1000]
    if outcome.verdict.result == "passed":
        kopf.info(body, reason="Passed", message=message)
    else:
        kopf.warn(body, reason=outcome.verdict.result.capitalize(), message=message)



def run(namespaces: list[str], *, liveness: str | None = None) -> None:
    """Run the controller until SIGINT/SIGTERM: every namespace when ``namespaces`` is empty."""
    kopf.configure(verbose=False)  # kopf's INFO lines: every handler, daemon and event, with timestamps
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces or None,
             liveness_endpoint=liveness)

"""`paychaos controller`: the operator that runs ``ChaosExperiment`` and ``GameDay`` objects (kopf).

Each object gets a kopf daemon, which runs it as its own process: an experiment as `paychaos run`
once per generation, a game day as `paychaos gate` once per generation or at each time of its
``spec.schedule`` (cron, UTC). Same engine, journals and verdicts as the CLI, against the Kubernetes
target of ``spec.target.namespace`` (an experiment's) or the object's own namespace; progress and the
verdict go to the object's status, with Events on the way.

A game day runs the ChaosExperiment objects its entries name (``../pod-kill.yaml`` or ``pod-kill``),
as they are when it starts. An experiment labelled ``paychaos.io/template=true`` is only run by game
days, never on its own.

What never leaks:
- Deleting an object mid-run: kopf's finalizer keeps it until its daemon has stopped the run
  (SIGTERM: the run reverts its faults, as on Ctrl-C) and halted whatever the namespace's fault
  ledger still holds.
- A controller that stops or is killed mid-run: the run is a process of its own and goes on
  (reverting its faults at its end). The controller that starts next finds it by the pid and start
  time kept on the object and waits for it (it resumes); when that process is gone too, it reverts
  what the ledger holds and ends the object as `error`, saying why.
- A namespace without the opt-in label is refused (phase Refused, the reason in status and an Event).

A scheduled game day whose run is still going at its next time skips that time; times missed while
no controller ran are skipped too (the next is always in the future), and the status says when.
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

from paychaos.experiments.resources import GROUP, GameDayStatus, Status
from paychaos.experiments.suites import SuiteEntry, next_time
from paychaos.faults import records
from paychaos.processes import alive, last_line
from paychaos.reporting.journals import JournalError, read_run
from paychaos.targets.kubernetes import KubernetesTarget, api_client

VERSION = "v1alpha1"
FINALIZER = f"{GROUP}/revert-faults"
RUN_ANNOTATION = f"{GROUP}/run"  # {"pid", "started", "generation", "journal", ...} of the run in progress
TEMPLATE_LABEL = f"{GROUP}/template"  # "true": a ChaosExperiment only game days run
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
    """One ChaosExperiment or GameDay object, as its daemon reads and writes it (through the API,
    not kopf's patch: a daemon's patches are not applied while it runs)."""

    def __init__(self, plural: str, name: str, namespace: str) -> None:
        from kubernetes import client

        self.plural, self.name, self.namespace = plural, name, namespace
        # What its status holds, and how a finished run's outcome is read into it.
        self.status_model, self.finish = (GameDayStatus, _finish_gameday) if plural == "gamedays" else (Status, _finish_experiment)
        self.api = api_client()
        self.objects = client.CustomObjectsApi(self.api)

    def read(self) -> dict[str, Any]:
        return self.objects.get_namespaced_custom_object(GROUP, VERSION, self.namespace, self.plural, self.name)

    def status(self, **fields: Any) -> None:
        status = self.status_model(**fields).model_dump(by_alias=True, exclude_none=True)
        self.objects.patch_namespaced_custom_object_status(GROUP, VERSION, self.namespace, self.plural,
                                                           self.name, {"status": status})

    def annotate(self, value: str | None) -> None:
        self.objects.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, self.plural, self.name,
                                                    {"metadata": {"annotations": {RUN_ANNOTATION: value}}})


# On deletion the daemon is only signalled (`stopped`) for the backoff: it stops the run and reverts
# within it, then returns. Without a backoff kopf cancels at once a thread it cannot interrupt.
@kopf.daemon(GROUP, VERSION, "chaosexperiments", labels={TEMPLATE_LABEL: kopf.ABSENT},
             cancellation_backoff=STOP_TIMEOUT + 30, cancellation_timeout=30)
def experiment(stopped: kopf.DaemonStopped, name: str, namespace: str, body: kopf.Body, logger: logging.Logger,
               **_: Any) -> None:
    obj = _Object("chaosexperiments", name, namespace)
    current = obj.read()
    target_namespace = (current.get("spec", {}).get("target") or {}).get("namespace") or namespace
    target = KubernetesTarget(target_namespace, obj.api)
    if _judged(current) or _recovered(obj, current, body, target, stopped, logger) or _refused(obj, current, body, target):
        return
    run = _start_experiment(obj, current, target)
    kopf.info(body, reason="Started", message=f"running against namespace {target_namespace} (pid {run['pid']})")
    _follow(obj, body, run, target, stopped, logger)


@kopf.daemon(GROUP, VERSION, "gamedays", cancellation_backoff=STOP_TIMEOUT + 30, cancellation_timeout=30)
def gameday(stopped: kopf.DaemonStopped, name: str, namespace: str, body: kopf.Body, logger: logging.Logger,
            **_: Any) -> None:
    obj = _Object("gamedays", name, namespace)
    target = KubernetesTarget(namespace, obj.api)
    current = obj.read()
    if _recovered(obj, current, body, target, stopped, logger) and stopped.is_set():
        return
    while not stopped.is_set():
        current = obj.read()  # a schedule may have been edited since the last run
        schedule = current["spec"].get("schedule")
        if schedule is None:
            if not (_judged(current) or _refused(obj, current, body, target)):
                _follow(obj, body, _start_gameday(obj, current, target, None), target, stopped, logger)
            return
        status = current.get("status") or {}
        last = status.get("lastScheduleTime")
        now = _now()
        due = next_time(schedule, max(now, dt.datetime.fromisoformat(last)) if last else now)
        if status.get("nextScheduleTime") != _rfc3339(due):  # the loop wakes each minute: write only news
            obj.status(next_schedule_time=_rfc3339(due))
            logger.info("next run at %s (%s)", _rfc3339(due), schedule)
        # Wake at least once a minute: an edited schedule is read again.
        if stopped.wait(min(60.0, max(0.0, (due - _now()).total_seconds()))) or _now() < due:
            continue
        if _refused(obj, current, body, target):
            obj.status(last_schedule_time=_rfc3339(due))
            continue
        run = _start_gameday(obj, current, target, due)
        kopf.info(body, reason="Started", message=f"the run for {_rfc3339(due)} (pid {run['pid']})")
        _follow(obj, body, run, target, stopped, logger)


def _judged(current: dict[str, Any]) -> bool:
    """Judged at this generation already: a new generation (an edited spec) runs again."""
    status = current.get("status") or {}
    return status.get("phase") in ("Finished", "Refused") and status.get("observedGeneration") == current["metadata"].get("generation")


def _recovered(obj: _Object, current: dict[str, Any], body: kopf.Body, target: KubernetesTarget,
               stopped: kopf.DaemonStopped, logger: logging.Logger) -> bool:
    """A run a stopped controller left: followed to its verdict while it lives, its faults reverted
    once it is gone. Whether there was one."""
    annotations = current["metadata"].get("annotations") or {}
    if RUN_ANNOTATION not in annotations:
        return False
    run = json.loads(annotations[RUN_ANNOTATION])
    if alive(run["pid"], run["started"]):
        kopf.info(body, reason="Resumed", message=f"the run (pid {run['pid']}) outlived a controller restart: waiting for it")
        _follow(obj, body, run, target, stopped, logger)
        return True
    reverted = _halt(target)
    obj.annotate(None)
    reason = ("the controller stopped while the run was in progress and the run is gone too; "
              f"{len(reverted)} fault(s) it left were reverted: apply the {obj.plural[:-1]} again to rerun it")
    obj.status(phase="Finished", verdict="error", reason=reason, finished_at=_rfc3339(_now()),
               observed_generation=run["generation"], **_scheduled(run))
    kopf.warn(body, reason="Interrupted", message=reason)
    return True


def _refused(obj: _Object, current: dict[str, Any], body: kopf.Body, target: KubernetesTarget) -> bool:
    refused = target.driver().opted_in()
    if refused is not None:
        obj.status(phase="Refused", reason=refused, observed_generation=current["metadata"].get("generation"))
        kopf.warn(body, reason="Refused", message=refused)
    return refused is not None


def _folder(obj: _Object, generation: int | None, due: dt.datetime | None = None) -> Path:
    folder = journals_dir() / obj.namespace / f"{obj.name}-{generation}" / (f"{due:%Y%m%dT%H%M%SZ}" if due else "")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _document(current: dict[str, Any]) -> dict[str, Any]:
    """The object as the file the CLI would read: apiVersion, kind, name, labels and spec."""
    document = {k: current[k] for k in ("apiVersion", "kind")}
    labels = current["metadata"].get("labels")
    document["metadata"] = {"name": current["metadata"]["name"], **({"labels": labels} if labels else {})}
    document["spec"] = current["spec"]
    return document


def _start_experiment(obj: _Object, current: dict[str, Any], target: KubernetesTarget) -> dict[str, Any]:
    generation = current["metadata"].get("generation")
    folder = _folder(obj, generation)
    spec_file, journal = folder / "experiment.yaml", folder / "journal.json"
    spec_file.write_text(yaml.safe_dump(_document(current), sort_keys=False), encoding="utf-8")
    argv = ["run", str(spec_file), "--journal", str(journal), "--target-arguments", json.dumps(target.arguments())]
    return _spawn(obj, argv, folder, {"generation": generation, "journal": str(journal)})


def _start_gameday(obj: _Object, current: dict[str, Any], target: KubernetesTarget, due: dt.datetime | None) -> dict[str, Any]:
    """`paychaos gate` over the ChaosExperiment objects the game day names, each written to a file
    beside the suite as the CLI would read them."""
    from kubernetes.client.rest import ApiException

    generation = current["metadata"].get("generation")
    folder = _folder(obj, generation, due)
    suite = _document(current)
    entries = []
    for entry in current["spec"]["experiments"]:
        name = SuiteEntry.model_validate(entry).object_name
        entries.append({**entry, "experiment": f"{name}.yaml"})
        try:
            experiment = obj.objects.get_namespaced_custom_object(GROUP, VERSION, obj.namespace, "chaosexperiments", name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            continue  # no file: the gate reports it missing, line and all, as for a suite on disk
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(_document(experiment), sort_keys=False), encoding="utf-8")
    suite["spec"] = {**suite["spec"], "experiments": entries}
    suite_file = folder / "gameday.yaml"
    suite_file.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    out = folder / "out"
    argv = ["gate", str(suite_file), "--namespace", target.namespace, "--out", str(out),
            "--runbooks", str(folder / "runbooks")]
    extra = {"generation": generation, "journal": str(out / "summary.json"), "group": True,
             **({"scheduled": _rfc3339(due)} if due else {})}
    return _spawn(obj, argv, folder, extra)


def _spawn(obj: _Object, argv: list[str], folder: Path, extra: dict[str, Any]) -> dict[str, Any]:
    # The verdict is read from this file when the run ends: one an earlier run left must not stand in.
    Path(extra["journal"]).unlink(missing_ok=True)
    with open(folder / "run.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "paychaos.cli", *argv],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,  # in our folder: probes/ is found as by the CLI
            start_new_session=True)  # a controller killed mid-run does not take the run (and its reverts) with it
    run = {"pid": proc.pid, "started": psutil.Process(proc.pid).create_time(), "log": str(folder / "run.log"), **extra}
    _children[proc.pid] = proc
    obj.annotate(json.dumps(run))
    obj.status(phase="Running", started_at=_rfc3339(_now()), journal=run["journal"], observed_generation=extra["generation"])
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
    obj.finish(obj, body, run)


def _running(run: dict[str, Any]) -> bool:
    child = _children.get(run["pid"])
    if child is not None and child.poll() is not None:
        del _children[run["pid"]]
    return alive(run["pid"], run["started"])


def _stop(run: dict[str, Any], logger: logging.Logger) -> None:
    # A game day's gate and the experiment it is running share its process group: both are told,
    # and both must be gone (the experiment reverting its faults) before the ledger is halted.
    kill = os.killpg if run.get("group") else os.kill
    try:
        kill(run["pid"], signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while not _gone(run) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not _gone(run):
        logger.warning("the run (pid %s) did not stop in %.0fs after SIGTERM: killing it", run["pid"], STOP_TIMEOUT)
        try:
            kill(run["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass


def _gone(run: dict[str, Any]) -> bool:
    if _running(run):
        return False
    if not run.get("group"):
        return True
    try:
        os.killpg(run["pid"], 0)  # any process left in the run's group (the leader reaped by `_running`)
    except ProcessLookupError:
        return True
    return False


def _halt(target: KubernetesTarget) -> list[records.FaultRecord]:
    try:
        return records.halt(target.ledger(), target.driver())
    except records.HaltIncomplete as exc:
        return exc.reverted


def _finish_experiment(obj: _Object, body: kopf.Body, run: dict[str, Any]) -> None:
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
    _finished(obj, body, run, verdict=outcome.verdict.result, reason=reason, time_to_detect=outcome.times.time_to_detect,
              recovery_time=outcome.times.recovery_time, failed_checks=[c.label for c in outcome.failed_checks])


def _finish_gameday(obj: _Object, body: kopf.Body, run: dict[str, Any]) -> None:
    path = Path(run["journal"])
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        # The gate refused the suite (an experiment it names is missing or invalid) or crashed.
        reason = f"the gate wrote no summary ({exc.__class__.__name__}); its last words: {last_line(Path(run['log']))}"
        _finished(obj, body, run, verdict="error", reason=reason, experiments=[])
        return
    experiments = summary["experiments"]
    not_passed = [e for e in experiments if e["verdict"] != "passed"]
    reason = summary["reason"] + "".join(f"; {e['name']}: {e['reason']}" for e in not_passed[:3])
    _finished(obj, body, run, verdict=summary["verdict"], reason=reason,
              failed_checks=[f"{e['name']}: {label}" for e in experiments for label in e["failedChecks"]],
              experiments=[{"name": e["name"], "verdict": e["verdict"], "reason": e["reason"][:300]} for e in experiments])


def _finished(obj: _Object, body: kopf.Body, run: dict[str, Any], *, verdict: str, reason: str, **fields: Any) -> None:
    obj.status(phase="Finished", verdict=verdict, reason=reason[:1000], finished_at=_rfc3339(_now()),
               journal=run["journal"], observed_generation=run["generation"], **_scheduled(run), **fields)
    obj.annotate(None)
    message = f"{verdict}: {reason}"[:1000]
    if verdict == "passed":
        kopf.info(body, reason="Passed", message=message)
    else:
        kopf.warn(body, reason=verdict.capitalize(), message=message)


def _scheduled(run: dict[str, Any]) -> dict[str, Any]:
    return {"last_schedule_time": run["scheduled"]} if "scheduled" in run else {}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rfc3339(at: dt.datetime) -> str:
    return at.isoformat(timespec="seconds")


def run(namespaces: list[str], *, liveness: str | None = None) -> None:
    """Run the controller until SIGINT/SIGTERM: every namespace when ``namespaces`` is empty."""
    kopf.configure(verbose=False)  # kopf's INFO lines: every handler, daemon and event, with timestamps
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces or None,
             liveness_endpoint=liveness)

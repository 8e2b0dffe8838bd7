"""`paychaos controller` on the test cluster: a ChaosExperiment applied with the API runs through
the operator and ends with a verdict in its status; deleting it mid-run reverts its faults; a
controller killed mid-run is resumed or reverted by the next one; a namespace that did not opt in
is refused. The experiments carry no load and no SLO (the cluster's pods carry no traffic): what is
judged is each fault's own proof.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from paychaos.cluster.running import ClusterDir, ClusterState
from paychaos.processes import alive
from paychaos.targets.kubernetes import OPT_IN_LABEL, OPT_IN_VALUE

from .conftest import wait_for
from .test_kubernetes_target import deploy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "paychaos.io", "v1alpha1", "chaosexperiments"


def experiment(name: str, fault: dict[str, Any], seconds: int) -> dict[str, Any]:
    # maxPercent 100: these tests are about the operator, not the blast radius. After one zone
    # loss the replacements are not spread back, so a later zone may hold two of three replicas
    # (a CI run's second zone loss was refused at 67 %, rightly).
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ChaosExperiment", "metadata": {"name": name},
            "spec": {"description": f"{name}, through the operator.", "target": {"platform": "kubernetes"},
                     "limits": {"maxPercent": 100},
                     "faults": [{"at": "1s", "for": f"{seconds}s", **fault}]}}


class Controller:
    """A `paychaos controller` process watching one namespace (as the cluster's admin, or as the
    kubeconfig given)."""

    def __init__(self, cluster: ClusterDir, namespace: str, journals: Path, kubeconfig: Path | None = None) -> None:
        self.args = [sys.executable, "-m", "paychaos.cli", "controller", "-n", namespace, "--journals", str(journals)]
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig or cluster.kubeconfig)}
        self.log = journals / "controller.log"
        journals.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=120)
        self.proc = None


@pytest.fixture()
def setup(cluster: ClusterDir, api: Any, tmp_path: Path) -> Iterator[tuple[str, Controller]]:
    from kubernetes import client, utils

    core = client.CoreV1Api(api)
    extensions = client.ApiextensionsV1Api(api)
    if not any(c.metadata.name == f"{PLURAL}.{GROUP}" for c in extensions.list_custom_resource_definition().items):
        for crd in sorted((ROOT / "platform" / "k8s" / "crds").glob("*.yaml")):
            utils.create_from_yaml(api, str(crd))
    namespace = f"ops-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace, "labels": {OPT_IN_LABEL: OPT_IN_VALUE},
                                        "annotations": {"paychaos.io/prometheus": "http://127.0.0.1:1",
                                                        "paychaos.io/edge": "http://127.0.0.1:1"}}})
    deploy(api, namespace, "payment")
    controller = Controller(cluster, namespace, tmp_path / "journals")
    controller.start()
    try:
        yield namespace, controller
    finally:
        controller.stop()
        for node in core.list_node().items:
            assert not node.spec.unschedulable, f"{node.metadata.name} left cordoned"


def create(api: Any, namespace: str, body: dict[str, Any]) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    objects = client.CustomObjectsApi(api)
    plural = f"{body['kind'].lower()}s"  # chaosexperiments, gamedays

    def created() -> bool:
        try:
            objects.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
        except ApiException as exc:
            if exc.status == 404:  # the CRD was Established an instant ago
                return False
            raise
        return True

    wait_for(f"the {body['kind']} created", created, timeout=30)


def status(api: Any, namespace: str, name: str, plural: str = PLURAL) -> dict[str, Any]:
    from kubernetes import client

    got = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    return got.get("status") or {}


def events(api: Any, namespace: str, name: str) -> list[str]:
    from kubernetes import client

    return [e.reason for e in client.CoreV1Api(api).list_namespaced_event(namespace).items
            if e.involved_object.kind == "ChaosExperiment" and e.involved_object.name == name]


def cordoned(api: Any, zone: str) -> bool:
    from kubernetes import client

    return all(n.spec.unschedulable for n in client.CoreV1Api(api).list_node().items
               if n.metadata.labels.get("topology.kubernetes.io/zone") == zone)


def test_an_applied_experiment_runs_through_the_operator_and_its_status_ends_with_a_verdict(api: Any, setup) -> None:
    namespace, _ = setup
    create(api, namespace, experiment("kill-one", {"podKill": {"service": "payment"}}, 3))
    final = wait_for("a verdict", lambda: (s if (s := status(api, namespace, "kill-one")).get("phase") == "Finished" else None),
                     timeout=120)
    assert final["verdict"] == "passed" and final["observedGeneration"] == 1, final
    assert final["startedAt"] and final["finishedAt"] and Path(final["journal"]).is_file()
    wait_for("its events", lambda: {"Started", "Passed"} <= set(events(api, namespace, "kill-one")))


def test_deleting_an_experiment_mid_run_reverts_every_fault(api: Any, setup) -> None:
    namespace, _ = setup
    create(api, namespace, experiment("lose-az-a", {"zoneLoss": {"zone": "az-a"}}, 300))
    wait_for("az-a cordoned by the run", lambda: cordoned(api, "az-a"), timeout=60)
    delete_and_see_everything_reverted(api, namespace, PLURAL, "lose-az-a")


def delete_and_see_everything_reverted(api: Any, namespace: str, plural: str, name: str) -> None:
    """Delete the object mid-run: it goes only once its run's faults are reverted, and it leaves
    no node cordoned and nothing in the fault ledger."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)

    def gone() -> bool:
        try:
            status(api, namespace, name, plural)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for("the object gone once its faults are reverted", gone, timeout=150)
    assert not any(n.spec.unschedulable for n in client.CoreV1Api(api).list_node().items)
    ledger = client.CoreV1Api(api).read_namespaced_config_map("paychaos-faults", namespace).data or {}
    assert ledger == {}, ledger


def test_a_controller_killed_mid_run_is_resumed_and_one_killed_with_its_run_is_reverted(api: Any, setup) -> None:
    namespace, controller = setup
    # The controller alone dies: its run goes on, and the next controller waits for it.
    create(api, namespace, experiment("survives", {"zoneLoss": {"zone": "az-b"}}, 8))
    wait_for("az-b cordoned", lambda: cordoned(api, "az-b"), timeout=60)
    controller.stop(signal.SIGKILL)
    controller.start()
    final = wait_for("a verdict", lambda: (s if (s := status(api, namespace, "survives")).get("phase") == "Finished" else None),
                     timeout=150)
    assert final["verdict"] == "passed", final
    wait_for("a Resumed event", lambda: "Resumed" in events(api, namespace, "survives"))  # posted after the status
    assert not cordoned(api, "az-b")

    # The controller and its run die together (the machine they ran on, say): the next one reverts.
    create(api, namespace, experiment("dies", {"zoneLoss": {"zone": "az-c"}}, 300))
    wait_for("az-c cordoned", lambda: cordoned(api, "az-c"), timeout=60)
    run = wait_for("the run's pid on the object", lambda: _run_pid(api, namespace, "dies"))
    controller.stop(signal.SIGKILL)
    os.kill(run, signal.SIGKILL)
    wait_for("the run dead", lambda: not alive(run, None), timeout=10)
    controller.start()
    final = wait_for("the interrupted run ended", lambda: (
        s if (s := status(api, namespace, "dies")).get("phase") == "Finished" else None), timeout=120)
    assert final["verdict"] == "error" and "were reverted" in final["reason"], final
    assert not cordoned(api, "az-c")
    wait_for("an Interrupted event", lambda: "Interrupted" in events(api, namespace, "dies"))


def _run_pid(api: Any, namespace: str, name: str) -> int | None:
    import json

    from kubernetes import client

    got = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    run = (got["metadata"].get("annotations") or {}).get(f"{GROUP}/run")
    return json.loads(run)["pid"] if run else None


def test_a_namespace_without_the_opt_in_label_is_refused_with_a_clear_status(api: Any, setup) -> None:
    from kubernetes import client

    namespace, _ = setup
    client.CoreV1Api(api).patch_namespace(namespace, {"metadata": {"labels": {OPT_IN_LABEL: None}}})
    create(api, namespace, experiment("refused", {"podKill": {"service": "payment"}}, 3))
    final = wait_for("a refusal", lambda: (s if (s := status(api, namespace, "refused")).get("phase") == "Refused" else None),
                     timeout=60)
    assert f"{OPT_IN_LABEL}={OPT_IN_VALUE}" in final["reason"] and "has not opted in" in final["reason"], final
    wait_for("a Refused event", lambda: "Refused" in events(api, namespace, "refused"))


def test_the_controller_needs_no_more_than_its_manifests_role(cluster: ClusterDir, api: Any, setup, tmp_path: Path) -> None:
    """The controller and its runs as the ServiceAccount of platform/k8s/operator, bound to its
    ClusterRole: an experiment still runs to a verdict, and the account cannot read a Secret."""
    from kubernetes import client, config, utils
    from kubernetes.client.rest import ApiException

    namespace, admin_controller = setup
    admin_controller.stop()
    core = client.CoreV1Api(api)
    operator = ROOT / "platform" / "k8s" / "operator"
    utils.create_from_yaml(api, str(operator / "namespace.yaml"))
    utils.create_from_yaml(api, str(operator / "rbac.yaml"))
    token = core.create_namespaced_service_account_token(
        "paychaos-controller", "paychaos-system", {"spec": {"expirationSeconds": 3600}}).status.token
    state = ClusterState.read(cluster)
    assert state is not None
    kubeconfig = tmp_path / "controller.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {"server": state.server, "certificate-authority": str(cluster.pki.ca_cert)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}]}))
    as_controller = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    with pytest.raises(ApiException) as forbidden:
        as_controller.list_namespaced_secret(namespace)
    assert forbidden.value.status == 403

    controller = Controller(cluster, namespace, tmp_path / "journals-sa", kubeconfig)
    controller.start()
    try:
        create(api, namespace, experiment("least-privilege", {"zoneLoss": {"zone": "az-b"}}, 3))
        final = wait_for("a verdict", lambda: (
            s if (s := status(api, namespace, "least-privilege")).get("phase") == "Finished" else None), timeout=120)
        assert final["verdict"] == "passed", (final, controller.log.read_text()[-2000:])
        wait_for("its events", lambda: {"Started", "Passed"} <= set(events(api, namespace, "least-privilege")))
    finally:
        controller.stop()
    assert not cordoned(api, "az-b")


# -- game days --------------------------------------------------------------------------------


@pytest.fixture()
def prometheus(tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping nothing: what a game day's gate reads between experiments to see
    the namespace settled (no series of the catalogue's `settled` above zero)."""
    import httpx

    from paychaos.cluster.running import free_ports
    from paychaos.platform.runtime.installing import locate

    (port,) = free_ports(1)
    config = tmp_path / "prometheus.yml"
    config.write_text("global: {scrape_interval: 5s}\n")
    proc = subprocess.Popen([str(locate().prometheus), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for("Prometheus ready", ready, timeout=30)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture()
def gameday_setup(api: Any, setup: tuple[str, Controller], prometheus: str) -> tuple[str, Controller]:
    """The operator's namespace, its Prometheus annotation pointing at the real one a gate settles on."""
    from kubernetes import client

    namespace, controller = setup
    client.CoreV1Api(api).patch_namespace(namespace, {"metadata": {"annotations": {"paychaos.io/prometheus": prometheus}}})
    return namespace, controller


def gameday(name: str, experiments: list[str], schedule: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"description": f"{name}, through the operator.", "settleWithin": "30s",
                            "experiments": [{"experiment": e} for e in experiments]}
    if schedule:
        spec["schedule"] = schedule
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GameDay", "metadata": {"name": name}, "spec": spec}


def template(name: str, fault: dict[str, Any], seconds: int) -> dict[str, Any]:
    body = experiment(name, fault, seconds)
    body["metadata"]["labels"] = {"paychaos.io/template": "true"}
    return body


def gameday_status(api: Any, namespace: str, name: str) -> dict[str, Any]:
    return status(api, namespace, name, "gamedays")


def test_a_gameday_runs_the_experiments_it_names_and_its_status_holds_each_verdict(api: Any, gameday_setup) -> None:
    namespace, _ = gameday_setup
    create(api, namespace, template("kill-payment", {"podKill": {"service": "payment"}}, 3))
    create(api, namespace, template("lose-az-b", {"zoneLoss": {"zone": "az-b"}}, 3))
    # Named as in a suite file beside the experiments, or by the object's name.
    create(api, namespace, gameday("rehearsal", ["../kill-payment.yaml", "lose-az-b"]))
    final = wait_for("the game day's verdict", lambda: (
        s if (s := gameday_status(api, namespace, "rehearsal")).get("phase") == "Finished" else None), timeout=240)
    assert final["verdict"] == "passed", final
    assert [(e["name"], e["verdict"]) for e in final["experiments"]] == [("kill-payment", "passed"), ("lose-az-b", "passed")], final
    assert final["observedGeneration"] == 1 and Path(final["journal"]).is_file()
    # The templates ran inside the game day only: never on their own.
    assert status(api, namespace, "kill-payment") == {} and status(api, namespace, "lose-az-b") == {}
    assert not cordoned(api, "az-b")

    # A game day naming an experiment the namespace does not have ends in error, saying which.
    create(api, namespace, gameday("incomplete", ["kill-payment", "no-such-experiment"]))
    final = wait_for("the game day's verdict", lambda: (
        s if (s := gameday_status(api, namespace, "incomplete")).get("phase") == "Finished" else None), timeout=120)
    assert final["verdict"] == "error" and "no-such-experiment" in final["reason"], final
    assert status(api, namespace, "kill-payment") == {}


def test_a_scheduled_gameday_runs_at_its_cron_times(api: Any, gameday_setup) -> None:
    import datetime as dt

    namespace, _ = gameday_setup
    create(api, namespace, template("kill-payment", {"podKill": {"service": "payment"}}, 2))
    create(api, namespace, gameday("every-minute", ["kill-payment"], schedule="* * * * *"))
    first = wait_for("the next time in status", lambda: gameday_status(api, namespace, "every-minute").get("nextScheduleTime"),
                     timeout=60)
    due = dt.datetime.fromisoformat(first)
    assert due.second == 0 and due > dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5), first
    final = wait_for("the scheduled run's verdict", lambda: (
        s if (s := gameday_status(api, namespace, "every-minute")).get("lastScheduleTime") == first
        and s.get("phase") == "Finished" else None), timeout=180)
    assert final["verdict"] == "passed", final
    then = wait_for("the time after", lambda: (
        t if (t := gameday_status(api, namespace, "every-minute").get("nextScheduleTime")) != first else None), timeout=60)
    assert dt.datetime.fromisoformat(then) - due >= dt.timedelta(minutes=1), (first, then)


def test_deleting_a_gameday_mid_run_stops_its_experiment_and_reverts_its_faults(api: Any, gameday_setup) -> None:
    namespace, _ = gameday_setup
    create(api, namespace, template("lose-az-c", {"zoneLoss": {"zone": "az-c"}}, 300))
    create(api, namespace, gameday("interrupted", ["lose-az-c"]))
    wait_for("az-c cordoned by the game day's experiment", lambda: cordoned(api, "az-c"), timeout=90)
    delete_and_see_everything_reverted(api, namespace, "gamedays", "interrupted")
    # Neither the gate nor the experiment it was running outlived the object.
    left = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"]) if "/interrupted-1/" in " ".join(p.info["cmdline"] or [])]
    assert left == [], left

"""The test cluster's build recipe: what is built from where, stamped how, and cached where."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from paychaos.cluster import building, running
from paychaos.cluster.pki import Pki
from paychaos.installing import MissingTool


def test_a_missing_binary_names_the_command_that_builds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYCHAOS_CACHE_DIR", str(tmp_path))
    with pytest.raises(MissingTool, match=r"etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok, KWOK stages, Prometheus Operator CRDs not built: "
                                          r"run `paychaos cluster install`"):
        building.locate()
    for binary in building.BINARIES:
        path = building.bin_dir() / binary.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        os.chmod(path, 0o755)
    (building.bin_dir() / building.STAGES).write_text("kind: Stage\n")
    with pytest.raises(MissingTool, match=r"the test cluster's Prometheus Operator CRDs not built"):
        building.locate()
    building.crds_dir().mkdir(parents=True)
    for name in building.PROMETHEUS_OPERATOR_CRDS:
        (building.crds_dir() / f"monitoring.coreos.com_{name}.yaml").write_text("kind: CustomResourceDefinition\n")
    assert set(building.locate()) - {"stages", "crds"} == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok"}
    # The folder names every version it was built from: a bump builds anew instead of reusing.
    assert all(v in str(building.bin_dir()) for v in (building.KUBERNETES_VERSION, building.ETCD_VERSION, building.KWOK_VERSION))


def test_the_control_plane_is_stamped_with_its_version() -> None:
    flags = building.ldflags("kube-apiserver")
    assert "-X k8s.io/component-base/version.gitVersion=v1.37.2" in flags
    assert "-X k8s.io/component-base/version.gitMinor=37" in flags
    assert building.ldflags("etcd") == "-s -w"


def test_every_staging_module_is_replaced_by_the_release_of_the_same_kubernetes() -> None:
    gomod = (building.GO_MODULES / "controlplane" / "go.mod").read_text()
    assert re.search(rf"^\s+k8s\.io/kubernetes {building.KUBERNETES_VERSION}\b", gomod, re.M)
    minor = building.KUBERNETES_VERSION.replace("v1.", "v0.")
    replaced = re.findall(r"^\s+(k8s\.io/\S+) => (k8s\.io/\S+) (v\S+)$", gomod, re.M)
    assert len(replaced) >= 30 and all(a == b and v == minor for a, b, v in replaced)
    assert all(f"k8s.io/kubernetes/cmd/{name}" in gomod for name in building.KUBERNETES_COMMANDS)
    assert (building.GO_MODULES / "controlplane" / "go.sum").stat().st_size > 0
    etcd = (building.GO_MODULES / "etcd" / "go.mod").read_text()
    assert f"go.etcd.io/etcd/server/v3 {building.ETCD_VERSION}" in etcd


# -- up and down ------------------------------------------------------------------------------


def test_six_nodes_two_per_zone_labelled_for_kwok_and_zone_spread() -> None:
    nodes = running.node_names()
    assert [z for _, z in nodes] == ["az-a", "az-a", "az-b", "az-b", "az-c", "az-c"]
    manifest = running.node_manifest(*nodes[2])
    assert manifest["metadata"]["name"] == "kwok-az-b-1"
    assert manifest["metadata"]["labels"]["topology.kubernetes.io/zone"] == "az-b"
    assert manifest["metadata"]["annotations"][running.KWOK_ANNOTATION] == "fake"
    assert "taints" not in manifest.get("spec", {}), "workloads schedule there without tolerations"


def test_the_command_lines_carry_the_pitfalls_found_on_this_machine(tmp_path: Path) -> None:
    binaries = {name: Path(f"/bin/{name}") for name in ("etcd", *building.CONTROL_PLANE, "kwok", "stages")}
    ports = dict(zip(("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok"), range(1, 7), strict=True))
    argv = dict(running.commands(binaries, running.ClusterDir(tmp_path), ports))
    assert list(argv) == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]
    api = " ".join(argv["kube-apiserver"])
    assert "--endpoint-reconciler-type none" in api and "--advertise-address 127.0.0.1" in api
    assert "--etcd-servers http://127.0.0.1:1" in api and "--secure-port 3" in api
    assert "--config /bin/stages" in " ".join(argv["kwok"])
    assert f"--manage-nodes-with-annotation-selector={running.KWOK_ANNOTATION}=fake" in argv["kwok"]
    assert all(a.startswith("/bin/") for a in (v[0] for v in argv.values()))


def test_the_certificates_chain_to_the_ca_and_the_admin_is_in_system_masters(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    pki = Pki(tmp_path)
    pki.create()
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    serving = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    admin = x509.load_pem_x509_certificate(pki.admin_cert.read_bytes())
    for cert in (serving, admin):
        cert.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "10.96.0.1"}
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    assert admin.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert pki.admin_key.stat().st_mode & 0o077 == 0, "keys are private"
    assert isinstance(serving.public_key(), ec.EllipticCurvePublicKey)


def test_down_stops_what_up_recorded_and_leaves_no_data(tmp_path: Path) -> None:
    cluster = running.ClusterDir(tmp_path / "cluster")
    cluster.logs.mkdir(parents=True)
    cluster.pki.create()
    cluster.etcd_data.mkdir()
    # A part that ignores SIGTERM, as a wedged one would: down escalates to SIGKILL.
    stubborn = running._spawn("etcd", [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                       "print('up', flush=True); time.sleep(60)"], cluster.logs / "etcd.log")
    polite = running._spawn("kwok", ["sleep", "60"], cluster.logs / "kwok.log")
    state = running.ClusterState("https://127.0.0.1:1", cluster.kubeconfig, {}, (stubborn, polite), ())
    running._write_state(cluster, state)
    assert running.ClusterState.read(cluster) == state and state.running
    time.sleep(0.3)  # the stubborn one has set its handler
    assert running.down(cluster, lambda _: None, timeout=1.0) == ["kwok", "etcd"]
    assert not stubborn.alive and not polite.alive
    assert not cluster.etcd_data.exists() and not cluster.pki.root.exists() and not cluster.state_file.exists()
    assert (cluster.logs / "etcd.log").read_text().startswith("up"), "the logs stay"
    assert running.down(cluster, lambda _: None) == []  # nothing left: fine


def test_a_part_that_exits_at_start_is_named_with_its_last_log_line(tmp_path: Path) -> None:
    cluster = running.ClusterDir(tmp_path)
    cluster.logs.mkdir(parents=True)
    part = running._spawn("etcd", ["sh", "-c", "echo 'listen tcp 127.0.0.1:1: bind: address already in use'; exit 1"],
                          cluster.logs / "etcd.log")
    with pytest.raises(running.ClusterError, match=r"etcd exited: listen tcp .* address already in use \(full log: "):
        running._await("etcd", lambda: False, part, cluster)


def test_kwok_stages_are_the_documents_its_kustomization_lists_in_order(tmp_path: Path) -> None:
    stage = tmp_path / "kustomize" / "stage"
    for folder, files in {"node/fast": ["node-initialize"], "pod/fast": ["pod-ready", "pod-delete"]}.items():
        (stage / folder).mkdir(parents=True)
        (stage / folder / "kustomization.yaml").write_text("resources:\n" + "".join(f"- {f}.yaml\n" for f in files))
        for f in files:
            (stage / folder / f"{f}.yaml").write_text(f"kind: Stage\nmetadata: {{name: {f}}}\n")
    (stage / "fast").mkdir()
    (stage / "fast" / "kustomization.yaml").write_text("resources:\n- ../node/fast\n- ../pod/fast\n")
    import yaml

    documents = list(yaml.safe_load_all(building.kwok_stages(tmp_path)))
    assert [d["metadata"]["name"] for d in documents] == ["node-initialize", "pod-ready", "pod-delete"]


def test_a_cold_build_says_how_far_it_has_got() -> None:
    said: list[str] = []
    on_line = building._compiled_counter("kube-apiserver", said.append, every=2)
    for line in ["go: downloading k8s.io/api v0.37.2", "k8s.io/apimachinery/pkg/types", "", "k8s.io/api/core/v1",
                 "# k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/pkg/api"]:
        on_line(line)
    assert said == ["kube-apiserver: 2 packages compiled"]
    assert "-v" in building.BINARIES[1].argv(Path("/tmp/x"))

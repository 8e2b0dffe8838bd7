"""`paychaos cluster up|down|status`: a real control plane and KWOK's fake nodes on loopback.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the KWOK controller run as
detached processes (no supervisor: a test cluster that loses a part is torn down, not healed),
each recorded with its pid and start time so ``down`` stops exactly what ``up`` started even after
the pid was reused. Nodes are KWOK's: Node objects it keeps Ready and whose pods it marks Running,
labelled ``topology.kubernetes.io/zone`` so zone spread, cordons and evictions behave as on a
cloud cluster. No pod carries traffic and NetworkPolicy is stored, not enforced (no CNI).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from paychaos.cluster import building
from paychaos.cluster.pki import Pki
from paychaos.installing import Progress
from paychaos.processes import alive, last_line

CLUSTER_DIR_ENV = "PAYCHAOS_CLUSTER_DIR"
ZONES = ("az-a", "az-b", "az-c")
NODES_PER_ZONE = 2
ZONE_LABEL = "topology.kubernetes.io/zone"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"  # the nodes KWOK manages (and only those)
SERVICE_RANGE = "10.96.0.0/16"
HOST = "127.0.0.1"
START_TIMEOUT = 90.0  # seconds for each part to answer; the API server needs ~5 s on two cores


class ClusterError(Exception):
    """The cluster could not start or stop; the message says which part and its last log line."""


@dataclass(frozen=True)
class ClusterDir:
    root: Path

    @classmethod
    def default(cls) -> ClusterDir:
        return cls(Path(os.environ.get(CLUSTER_DIR_ENV, ".paychaos/cluster")).expanduser().resolve())

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def pki(self) -> Pki:
        return Pki(self.root / "pki")

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


@dataclass(frozen=True)
class Part:
    name: str
    pid: int
    started: float  # the process's create time: a reused pid is not ours

    @property
    def alive(self) -> bool:
        if (child := _children.get(self.pid)) is not None and child.poll() is not None:
            del _children[self.pid]
        return alive(self.pid, self.started)


@dataclass(frozen=True)
class ClusterState:
    server: str
    kubeconfig: Path
    ports: dict[str, int]
    parts: tuple[Part, ...]
    nodes: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps({"server": self.server, "kubeconfig": str(self.kubeconfig), "ports": self.ports,
                           "parts": [vars(p) for p in self.parts], "nodes": list(self.nodes)}, indent=2)

    @classmethod
    def read(cls, cluster: ClusterDir) -> ClusterState | None:
        try:
            data = json.loads(cluster.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return cls(server=data["server"], kubeconfig=Path(data["kubeconfig"]), ports=data["ports"],
                   parts=tuple(Part(**p) for p in data["parts"]), nodes=tuple(data.get("nodes", [])))

    @property
    def running(self) -> bool:
        return all(p.alive for p in self.parts)


def node_names(zones: tuple[str, ...] = ZONES, per_zone: int = NODES_PER_ZONE) -> list[tuple[str, str]]:
    """(node, zone) pairs: ``kwok-az-a-1``, ``kwok-az-a-2``, … in zone order."""
    return [(f"kwok-{zone}-{i}", zone) for zone in zones for i in range(1, per_zone + 1)]


def node_manifest(name: str, zone: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                       "type": "kwok", ZONE_LABEL: zone, "topology.kubernetes.io/region": "local"},
        },
    }


def kubeconfig(server: str, pki: Pki) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "paychaos-test", "cluster": {"server": server, "certificate-authority": str(pki.ca_cert)}}],
        "users": [{"name": "paychaos-admin", "user": {"client-certificate": str(pki.admin_cert),
                                                      "client-key": str(pki.admin_key)}}],
        "contexts": [{"name": "paychaos-test", "context": {"cluster": "paychaos-test", "user": "paychaos-admin"}}],
        "current-context": "paychaos-test",
    }


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now (held together, so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]


def commands(binaries: dict[str, Path], cluster: ClusterDir, ports: dict[str, int]) -> list[tuple[str, list[str]]]:
    """Each part's command line, in start order."""
    pki, kubecfg = cluster.pki, str(cluster.kubeconfig)
    etcd = f"http://{HOST}:{ports['etcd']}"
    peer = f"http://{HOST}:{ports['etcd-peer']}"
    return [
        ("etcd", [str(binaries["etcd"]), "--name", "paychaos", "--data-dir", str(cluster.etcd_data),
                  "--listen-client-urls", etcd, "--advertise-client-urls", etcd,
                  "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                  "--initial-cluster", f"paychaos={peer}",
                  "--unsafe-no-fsync",  # a throw-away cluster: durability costs seconds per test
                  "--log-level", "warn"]),
        ("kube-apiserver", [str(binaries["kube-apiserver"]), "--etcd-servers", etcd,
                            "--bind-address", HOST, "--advertise-address", HOST, "--secure-port", str(ports["apiserver"]),
                            # with a loopback advertise address the endpoint reconciler refuses to start
                            "--endpoint-reconciler-type", "none",
                            "--tls-cert-file", str(pki.serving_cert), "--tls-private-key-file", str(pki.serving_key),
                            "--client-ca-file", str(pki.ca_cert),
                            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
                            "--service-account-key-file", str(pki.sa_pub),
                            "--service-account-signing-key-file", str(pki.sa_key),
                            "--service-cluster-ip-range", SERVICE_RANGE,
                            "--authorization-mode", "Node,RBAC",
                            "--enable-priority-and-fairness=false", "--profiling=false",
                            "--cert-dir", str(pki.root)]),
        ("kube-controller-manager", [str(binaries["kube-controller-manager"]), "--kubeconfig", kubecfg,
                                     "--leader-elect=false", "--bind-address", HOST,
                                     "--secure-port", str(ports["controller-manager"]),
                                     "--service-account-private-key-file", str(pki.sa_key),
                                     "--root-ca-file", str(pki.ca_cert),
                                     "--cluster-signing-cert-file", str(pki.ca_cert),
                                     "--cluster-signing-key-file", str(pki.ca_key),
                                     "--service-cluster-ip-range", SERVICE_RANGE, "--profiling=false"]),
        ("kube-scheduler", [str(binaries["kube-scheduler"]), "--kubeconfig", kubecfg, "--leader-elect=false",
                            "--bind-address", HOST, "--secure-port", str(ports["scheduler"]), "--profiling=false"]),
        ("kwok", [str(binaries["kwok"]), "--kubeconfig", kubecfg, "--config", str(binaries["stages"]),
                  "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                  "--node-lease-duration-seconds", "40", "--server-address", f"{HOST}:{ports['kwok']}",
                  "--cidr", "10.244.0.0/16", "--node-ip", HOST]),
    ]


def health_urls(ports: dict[str, int]) -> dict[str, str]:
    return {
        "etcd": f"http://{HOST}:{ports['etcd']}/health",
        "kube-apiserver": f"https://{HOST}:{ports['apiserver']}/readyz",
        "kube-controller-manager": f"https://{HOST}:{ports['controller-manager']}/healthz",
        "kube-scheduler": f"https://{HOST}:{ports['scheduler']}/healthz",
        "kwok": f"http://{HOST}:{ports['kwok']}/healthz",
    }


def up(cluster: ClusterDir, progress: Progress, *, per_zone: int = NODES_PER_ZONE) -> ClusterState:
    """Start the cluster (or return the one running there) once every node is Ready and untainted."""
    current = ClusterState.read(cluster)
    if current is not None and current.running:
        progress(f"already up: {current.server}")
        return current
    if current is not None:
        progress("a previous cluster here is partly down: stopping what is left of it")
        down(cluster, progress)
    binaries = building.locate()
    started = time.monotonic()
    cluster.root.mkdir(parents=True, exist_ok=True)
    cluster.logs.mkdir(exist_ok=True)
    cluster.pki.create(HOST)
    ports = dict(zip(("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok"), free_ports(6), strict=True))
    server = f"https://{HOST}:{ports['apiserver']}"
    cluster.kubeconfig.write_text(yaml.safe_dump(kubeconfig(server, cluster.pki), sort_keys=False), encoding="utf-8")
    cluster.kubeconfig.chmod(0o600)
    urls = health_urls(ports)
    parts: list[Part] = []
    state = ClusterState(server, cluster.kubeconfig, ports, (), ())
    try:
        for name, argv in commands(binaries, cluster, ports):
            parts.append(_spawn(name, argv, cluster.logs / f"{name}.log"))
            state = ClusterState(server, cluster.kubeconfig, ports, tuple(parts), ())
            _write_state(cluster, state)  # before waiting: a failed start is still stopped by `down`
            _await(name, lambda n=name: _healthy(urls[n], cluster.pki), parts[-1], cluster)
            progress(f"{name}: up ({time.monotonic() - started:.1f}s)")
        nodes = create_nodes(cluster, per_zone)
        state = ClusterState(server, cluster.kubeconfig, ports, tuple(parts), tuple(nodes))
        _write_state(cluster, state)
        progress(f"{len(nodes)} KWOK nodes Ready in {len(ZONES)} zones ({time.monotonic() - started:.1f}s)")
    except BaseException:
        down(cluster, lambda _: None)
        raise
    return state


def create_nodes(cluster: ClusterDir, per_zone: int) -> list[str]:
    """Create the nodes and wait until each is Ready with no taint (the node lifecycle controller
    lifts ``not-ready`` a moment after KWOK reports Ready; until then nothing schedules there),
    and the ``default`` namespace's ServiceAccount exists (pods are refused before it does)."""
    api = core_api(cluster)
    wanted = node_names(per_zone=per_zone)
    for name, zone in wanted:
        api.create_node(node_manifest(name, zone))
    names = {n for n, _ in wanted}

    def ready() -> bool:
        nodes = [n for n in api.list_node().items if n.metadata.name in names]
        return len(nodes) == len(names) and all(
            any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or [])) and not n.spec.taints
            for n in nodes) and bool(api.list_namespaced_service_account("default").items)

    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if time.monotonic() > deadline:
            raise ClusterError(f"the KWOK nodes were not Ready and untainted within {START_TIMEOUT:.0f}s: "
                               f"see {cluster.logs / 'kwok.log'} and {cluster.logs / 'kube-controller-manager.log'}")
        time.sleep(0.25)
    return sorted(names)


def core_api(cluster: ClusterDir) -> Any:
    from kubernetes import client, config

    return client.CoreV1Api(config.new_client_from_config(config_file=str(cluster.kubeconfig)))


def down(cluster: ClusterDir, progress: Progress, timeout: float = 15.0) -> list[str]:
    """Stop every part this folder's state names, newest first; remove the cluster's data (etcd,
    keys, kubeconfig) and keep its logs. The names of the parts stopped."""
    state = ClusterState.read(cluster)
    stopped: list[str] = []
    for part in reversed(state.parts if state else ()):
        if not part.alive:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(part.pid, signal.SIGTERM)
        if not _gone(part, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(part.pid, signal.SIGKILL)
            if not _gone(part, 5.0):
                raise ClusterError(f"{part.name} (pid {part.pid}) is still running after SIGKILL")
        stopped.append(part.name)
        progress(f"{part.name}: stopped")
    for path in (cluster.etcd_data, cluster.pki.root):
        shutil.rmtree(path, ignore_errors=True)
    for path in (cluster.kubeconfig, cluster.state_file):
        path.unlink(missing_ok=True)
    return stopped


# The parts this process started, kept so that each is reaped when it exits (a test session that
# runs `up` in-process outlives its parts); `paychaos cluster up` exits and leaves them to init.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _spawn(name: str, argv: list[str], log: Path) -> Part:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # outlives `paychaos cluster up`, and a Ctrl-C to it
    _children[proc.pid] = proc
    try:
        started = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        started = 0.0
    return Part(name, proc.pid, started)


def _healthy(url: str, pki: Pki) -> bool:
    try:
        # The components serve their own self-signed certificates; only the API server's is ours.
        verify: Any = ssl.create_default_context(cafile=str(pki.ca_cert)) if "readyz" in url else False
        with httpx.Client(timeout=2.0, verify=verify) as http:
            return http.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def _await(name: str, healthy: Callable[[], bool], part: Part, cluster: ClusterDir) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not healthy():
        if not part.alive or time.monotonic() > deadline:
            why = "exited" if not part.alive else f"did not answer within {START_TIMEOUT:.0f}s"
            log = cluster.logs / f"{name}.log"
            raise ClusterError(f"{name} {why}: {last_line(log)} (full log: {log})")
        time.sleep(0.1)


def _gone(part: Part, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while part.alive:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _write_state(cluster: ClusterDir, state: ClusterState) -> None:
    partial = cluster.state_file.with_suffix(".partial")
    partial.write_text(state.to_json(), encoding="utf-8")
    partial.replace(cluster.state_file)



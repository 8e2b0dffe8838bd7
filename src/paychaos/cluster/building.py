"""`paychaos cluster install`: the Kubernetes test cluster's binaries, built from the Go module proxy.

A real control plane with no download site and no container registry: kube-apiserver,
kube-controller-manager and kube-scheduler (and kubectl, whose kustomize renders the manifests in
``platform/k8s``) from ``k8s.io/kubernetes`` (the module in
``go/controlplane`` maps each staging module Kubernetes requires at v0.0.0 to its published
release), etcd over ``etcdmain`` (``go/etcd``; etcd's own module cannot be `go install`ed), and
KWOK's fake-node controller. Each binary lands in the cache under the versions it was built from,
so a warm run rebuilds nothing; the Go build cache makes a rebuild after a version bump cheap.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from paychaos.installing import InstallError, MissingTool, Progress, cache_dir, locked, run_logged

KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.7.3"
KWOK_VERSION = "v0.8.0"
# The Prometheus Operator's CRDs, so the reference platform's Prometheus objects are applied for
# real in tests (from its Go module: it publishes them there, beside its code).
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
PROMETHEUS_OPERATOR_CRDS = ("podmonitors", "prometheuses", "prometheusrules", "servicemonitors")
MIN_GO = (1, 26)
GO_MODULES = Path(__file__).resolve().parent / "go"
INSTALL_COMMAND = "paychaos cluster install"


@dataclass(frozen=True)
class Binary:
    name: str
    module_dir: str | None  # the folder under go/ it is built in; None: `go install` of ``package``
    package: str

    def argv(self, out: Path) -> list[str]:
        # -v: each package's path as it is compiled, counted into the progress of a cold build.
        if self.module_dir is None:
            return ["go", "install", "-v", "-trimpath", "-ldflags=-s -w", self.package]
        return ["go", "build", "-v", "-trimpath", f"-ldflags={ldflags(self.name)}", "-o", str(out), self.package]


CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
KUBERNETES_COMMANDS = (*CONTROL_PLANE, "kubectl")
BINARIES = (
    Binary("etcd", "etcd", "."),
    *(Binary(name, "controlplane", f"k8s.io/kubernetes/cmd/{name}") for name in KUBERNETES_COMMANDS),
    Binary("kwok", None, f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"),
)


def ldflags(name: str) -> str:
    """Strip symbols; stamp the Kubernetes binaries with their version (they report v0.0.0 otherwise,
    and clients that compare versions refuse them)."""
    if name not in KUBERNETES_COMMANDS:
        return "-s -w"
    major, minor, _ = KUBERNETES_VERSION.lstrip("v").split(".")
    stamp = {"gitVersion": KUBERNETES_VERSION, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean"}
    return "-s -w " + " ".join(f"-X k8s.io/component-base/version.{k}={v}" for k, v in stamp.items())


def bin_dir() -> Path:
    """Where the binaries of these versions live (a version bump builds into a new folder)."""
    return cache_dir() / f"kubernetes-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}-kwok-{KWOK_VERSION}" / "bin"


STAGES = "kwok-stages.yaml"  # KWOK's own "fast" stages of the version built, beside the binaries
KWOK_STAGE_SET = "kustomize/stage/fast"


def crds_dir() -> Path:
    return cache_dir() / f"prometheus-operator-{PROMETHEUS_OPERATOR_VERSION}" / "crds"


def _crd_files() -> dict[str, Path]:
    """Each Prometheus Operator CRD's file name (as its module names it) and where it is kept."""
    return {f"monitoring.coreos.com_{name}.yaml": crds_dir() / f"monitoring.coreos.com_{name}.yaml"
            for name in PROMETHEUS_OPERATOR_CRDS}


def locate() -> dict[str, Path]:
    """Every binary (and the KWOK stages as ``stages``, the Prometheus Operator's CRDs as ``crds``),
    or ``MissingTool`` naming the command that builds them."""
    found = {b.name: bin_dir() / b.name for b in BINARIES}
    missing = [name for name, path in found.items() if not os.access(path, os.X_OK)]
    if not (bin_dir() / STAGES).is_file():
        missing.append("KWOK stages")
    if not all(path.is_file() for path in _crd_files().values()):
        missing.append("Prometheus Operator CRDs")
    if missing:
        raise MissingTool(f"the test cluster's {', '.join(missing)} not built", INSTALL_COMMAND)
    return {**found, "stages": bin_dir() / STAGES, "crds": crds_dir()}


def kwok_stages(module_dir: Path, kustomization: str = KWOK_STAGE_SET) -> str:
    """The Stage documents a KWOK kustomization lists, as one multi-document YAML.

    The kwok binary has no stages built in (``kwokctl`` normally hands them over); these are the
    ones KWOK publishes in its module for the same version. Only ``resources`` lists are followed:
    the stage kustomizations use nothing else, so a kustomize dependency would buy nothing.
    """
    def resources(folder: Path) -> list[Path]:
        listed = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8")).get("resources", [])
        files: list[Path] = []
        for entry in listed:
            path = (folder / entry).resolve()
            files += resources(path) if path.is_dir() else [path]
        return files

    documents = [f.read_text(encoding="utf-8").strip() for f in resources(module_dir / kustomization)]
    if not documents:
        raise InstallError(f"KWOK's {kustomization} lists no stages in {module_dir}")
    return "\n---\n".join(documents) + "\n"


def _compiled_counter(name: str, progress: Progress, every: int = 250) -> Callable[[str], None]:
    """Say how many packages a build has compiled, every ``every`` of them (a cold kube-apiserver
    compiles a few thousand over several minutes, in silence otherwise)."""
    compiled = 0

    def on_line(line: str) -> None:
        nonlocal compiled
        if line.strip() and not line.startswith(("go: ", "#")):
            compiled += 1
            if compiled % every == 0:
                progress(f"{name}: {compiled} packages compiled")

    return on_line


def _module(go: str, module: str) -> Path:
    """Where the Go module cache holds ``module`` (``path@version``), downloaded from the proxy if need be."""
    out = subprocess.run([go, "mod", "download", "-json", module], capture_output=True,
                         text=True, check=False, cwd=GO_MODULES / "etcd")
    try:
        return Path(json.loads(out.stdout)["Dir"])
    except (ValueError, KeyError):
        raise InstallError(f"cannot download the Go module {module}: {(out.stderr or out.stdout).strip()[:300]}") from None


def go_version(go: str) -> tuple[int, int] | None:
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False).stdout.strip()
    parts = out.removeprefix("go").split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def install(progress: Progress) -> dict[str, Path]:
    """Build what is missing (13–20 minutes cold on two cores; nothing when warm)."""
    go = shutil.which("go")
    if go is None:
        raise MissingTool("the test cluster is built with Go 1.26+, which is not installed",
                          "apt-get install -y golang-go && export GOTOOLCHAIN=go1.26.8")
    version = go_version(go)
    if version is None or version < MIN_GO:
        raise MissingTool(f"Kubernetes {KUBERNETES_VERSION} needs Go {'.'.join(map(str, MIN_GO))}+, found "
                          f"{'.'.join(map(str, version)) if version else 'an unknown version'}",
                          "export GOTOOLCHAIN=go1.26.8  # the go command fetches it from the module proxy")
    out_dir = bin_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    with locked(out_dir.parent / ".install.lock"):
        for binary in BINARIES:
            target = out_dir / binary.name
            if os.access(target, os.X_OK):
                progress(f"{binary.name}: built ({target})")
                continue
            progress(f"{binary.name}: building {binary.package} (cold: minutes; the Go build cache keeps the work)")
            started = time.monotonic()
            cwd = GO_MODULES / binary.module_dir if binary.module_dir else None
            env = {"CGO_ENABLED": "0"}
            partial = out_dir / f".{binary.name}.partial"
            if binary.module_dir is None:
                env["GOBIN"] = str(partial.parent / ".gobin")
            run_logged(binary.argv(partial), cache_dir() / "logs" / f"build-{binary.name}.log",
                       f"building {binary.name}", env=env, cwd=cwd, on_line=_compiled_counter(binary.name, progress))
            built = partial if binary.module_dir else partial.parent / ".gobin" / binary.name
            if not built.exists():
                raise InstallError(f"building {binary.name} produced no binary at {built}")
            built.replace(target)  # only a whole binary ever sits under its name
            progress(f"{binary.name}: built in {time.monotonic() - started:.0f}s")
        stages = out_dir / STAGES
        if not stages.is_file():
            partial = out_dir / f".{STAGES}.partial"
            partial.write_text(kwok_stages(_module(go, f"sigs.k8s.io/kwok@{KWOK_VERSION}")), encoding="utf-8")
            partial.replace(stages)
            progress(f"KWOK stages: {stages}")
        crds = _crd_files()
        if not all(path.is_file() for path in crds.values()):
            source = _module(go, f"github.com/prometheus-operator/prometheus-operator@{PROMETHEUS_OPERATOR_VERSION}")
            crds_dir().mkdir(parents=True, exist_ok=True)
            for file, path in crds.items():
                partial = path.with_name(f".{file}.partial")
                shutil.copyfile(source / "example" / "prometheus-operator-crd" / file, partial)
                partial.replace(path)  # only a whole file ever sits under its name
            progress(f"Prometheus Operator {PROMETHEUS_OPERATOR_VERSION} CRDs: {crds_dir()}")
    return locate()

"""The test cluster's build recipe: what is built from where, stamped how, and cached where."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from paychaos.cluster import building
from paychaos.installing import MissingTool


def test_a_missing_binary_names_the_command_that_builds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYCHAOS_CACHE_DIR", str(tmp_path))
    with pytest.raises(MissingTool, match=r"etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok not built: "
                                          r"run `paychaos cluster install`"):
        building.locate()
    for binary in building.BINARIES:
        path = building.bin_dir() / binary.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        os.chmod(path, 0o755)
    assert set(building.locate()) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
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
    assert all(f"k8s.io/kubernetes/cmd/{name}" in gomod for name in building.CONTROL_PLANE)
    assert (building.GO_MODULES / "controlplane" / "go.sum").stat().st_size > 0
    etcd = (building.GO_MODULES / "etcd" / "go.mod").read_text()
    assert f"go.etcd.io/etcd/server/v3 {building.ETCD_VERSION}" in etcd

"""Test-session fixtures: one real reference platform per session, on its own ports and run dir."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests run their stack beside any stack a developer has up on the default ports; keep any
# offset below 13000 so every port stays under the kernel's ephemeral range (32768+).
TEST_PORT_OFFSET = os.environ.get("PAYCHAOS_TEST_PORT_OFFSET", "5000")


@pytest.fixture(scope="session")
def run_dir() -> Iterator[Path]:
    # Not under pytest's tmp tree: every pytest session resets that tree to mode 0700, and the
    # PostgreSQL server (which runs as its own user) must be able to reach its data directory.
    path = Path(tempfile.mkdtemp(prefix="paychaos-test-run-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def stack_env(run_dir: Path) -> dict[str, str]:
    env = {"PAYCHAOS_RUN_DIR": str(run_dir), "PAYCHAOS_PORT_OFFSET": TEST_PORT_OFFSET}
    os.environ.update(env)
    return env

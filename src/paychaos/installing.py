"""What every install step shares, for the reference platform's tools (`paychaos stack install`)
and the Kubernetes test cluster's (`paychaos cluster install`): the per-user cache, a lock so two
installs never write it at once, a logged step that fails in one line, and the error that names
the command fixing a missing tool.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE_DIR_ENV = "PAYCHAOS_CACHE_DIR"
Progress = Callable[[str], None]


class MissingTool(Exception):
    """A tool is not there; the message says what and the command that fixes it."""

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(f"{what}: run `{fix}`")
        self.what = what
        self.fix = fix


class InstallError(Exception):
    """An install step failed; the message is one line and points at the full log."""


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "paychaos"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (two installs at once, a developer's and a test session's,
    would otherwise corrupt the cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_logged(argv: list[str], log: Path, what: str, env: dict[str, str] | None = None,
               on_line: Callable[[str], None] | None = None, cwd: Path | None = None) -> None:
    """Run a step, keep its full output in ``log``, and fail with one line if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    last = ""
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **(env or {})}, cwd=cwd)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if line.strip():
                last = line.strip()
            if on_line is not None:
                on_line(line)
        code = proc.wait()
    if code != 0:
        raise InstallError(f"{what} failed (exit {code}): {last[:200]} — full log: {log}")

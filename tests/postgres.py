"""A PostgreSQL server for the tests: $FMNIST_TEST_POSTGRES if set, else a throwaway cluster
made with Debian's postgresql-common tools (as root), dropped again at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

PG_ROOT = Path("/usr/lib/postgresql")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def debian_postgres_version() -> str | None:
    """The newest installed server version, if this is root on a Debian-like system with it."""
    if os.geteuid() != 0 or not shutil.which("pg_createcluster") or not PG_ROOT.is_dir():
        return None
    versions = sorted((p.name for p in PG_ROOT.iterdir() if (p / "bin" / "postgres").is_file()), key=float)
    return versions[-1] if versions else None


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=120)


def _psql(port: int, sql: str) -> None:
    _sh("runuser", "-u", "postgres", "--", "psql", "-p", str(port), "-v", "ON_ERROR_STOP=1", "-c", sql)


@contextlib.contextmanager
def throwaway_cluster(version: str) -> Iterator[str]:
    """Create, start and yield the URL of a cluster with role and database ``fmnist``; drop it after."""
    name, port = f"fmnisttest{os.getpid()}", _free_port()
    _sh("pg_createcluster", version, name, "-p", str(port), "--start")
    try:
        _psql(port, "CREATE ROLE fmnist LOGIN CREATEDB PASSWORD 'fmnist'")  # the MLflow test's own database
        _psql(port, "CREATE DATABASE fmnist OWNER fmnist")
        yield f"postgresql://fmnist:fmnist@127.0.0.1:{port}/fmnist"
    finally:
        subprocess.run(["pg_dropcluster", "--stop", version, name], capture_output=True, timeout=120)

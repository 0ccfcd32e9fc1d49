"""A throwaway PostgreSQL cluster for the production-like storage smoke tests: initdb into a temp
directory, the server on a free loopback port (as the postgres user when we are root), stopped by PID."""

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager

from dagster_taskiq_go.dev import free_port


def _binary(name: str) -> str:
    """A PostgreSQL program: on PATH, else the newest Debian install (/usr/lib/postgresql/<v>/bin)."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]), reverse=True)),
        None,
    )
    if found is None:
        raise RuntimeError(f"{name} not found: install PostgreSQL (Debian: apt-get install -y postgresql)")
    return found


@contextmanager
def postgres_cluster():
    """Yields Dagster's `storage` config for a fresh cluster (database "postgres", trust auth on 127.0.0.1)."""
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = tempfile.mkdtemp(prefix="dagster-taskiq-pg-")
    data = os.path.join(root, "data")
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    log = os.path.join(root, "server.log")
    pid = None
    try:
        subprocess.run(
            [*as_user, _binary("initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *as_user,
                _binary("pg_ctl"),
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                data,
                "-l",
                log,
                "-o",
                f"-p {port} -h 127.0.0.1 -k {root} -c fsync=off",
            ],
            check=True,
            capture_output=True,
        )
        with open(os.path.join(data, "postmaster.pid")) as f:
            pid = int(f.readline())
        yield {
            "postgres": {
                "postgres_db": {
                    "username": "postgres",
                    "password": "unused-trust-auth",
                    "hostname": "127.0.0.1",
                    "db_name": "postgres",
                    "port": port,
                    # dagster-postgres installs psycopg2, but SQLAlchemy 2.1 maps a bare "postgresql://"
                    # to psycopg 3: name the driver, as users of this pin set must.
                    "scheme": "postgresql+psycopg2",
                }
            }
        }
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            deadline = time.monotonic() + 60
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.2)
            if os.path.exists(f"/proc/{pid}"):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)

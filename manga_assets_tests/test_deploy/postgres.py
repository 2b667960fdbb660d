"""A throwaway PostgreSQL server on 127.0.0.1 for the deployment tests.

Uses the server binaries of the machine (Debian: ``apt-get install -y postgresql``, found under
``/usr/lib/postgresql/<version>/bin``). PostgreSQL refuses to run as root, so as root the server
runs as the ``postgres`` user (``runuser``) from a directory that user owns. The cluster lives
in a fresh temporary directory and is removed when the context exits.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

USER = "dagster"


@dataclass(frozen=True)
class LocalPostgres:
    host: str
    port: int
    username: str
    password: str
    db_name: str

    def env(self) -> dict[str, str]:
        """The variables that deploy/dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": self.db_name,
            "DAGSTER_PG_USERNAME": self.username,
            "DAGSTER_PG_PASSWORD": self.password,
        }

    def connect(self, db_name: str | None = None):
        import psycopg2

        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.username,
            password=self.password,
            dbname=db_name or self.db_name,
            connect_timeout=10,
        )


def server_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl, newest version first; None when not installed."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user() -> tuple[list[str], pwd.struct_passwd | None]:
    """The command prefix that runs a server binary as a user PostgreSQL accepts."""
    if os.geteuid() != 0:
        return [], None
    try:
        account = pwd.getpwnam("postgres")
    except KeyError as error:
        raise RuntimeError(
            "running as root and there is no 'postgres' user to run the server as "
            "(apt-get install -y postgresql creates one)"
        ) from error
    return ["runuser", "-u", account.pw_name, "--"], account


@contextlib.contextmanager
def local_postgres(db_name: str = "manga_dagster") -> Iterator[LocalPostgres]:
    """Start a fresh cluster on a free port of 127.0.0.1 with password authentication."""
    bin_dir = server_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
    prefix, account = _as_server_user()
    # Not under pytest's tmp_path: as root that sits in a 0700 directory the server user
    # cannot enter. The socket path must also stay short (about 100 characters at most).
    root = Path(tempfile.mkdtemp(prefix="manga-pg-"))
    data, log = root / "data", root / "server.log"
    password = secrets.token_hex(16)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if account is not None:
        for path in (root, pwfile):
            os.chown(path, account.pw_uid, account.pw_gid)

    def run(*args: str) -> None:
        done = subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr[-2000:]}\n{tail}"
            )

    started = False
    try:
        run(
            str(bin_dir / "initdb"),
            "-D", str(data), "-U", USER, f"--pwfile={pwfile}", "-E", "UTF8",
            "--auth-host=scram-sha-256", "--auth-local=trust", "--no-sync",
        )  # fmt: skip
        port = _free_port()
        options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=40"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
            "-o", options, "start")  # fmt: skip
        started = True
        server = LocalPostgres("127.0.0.1", port, USER, password, db_name)
        admin = server.connect("postgres")
        try:
            admin.autocommit = True
            with admin.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{db_name}"')
        finally:
            admin.close()
        yield server
    finally:
        if started:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)

"""A throwaway PostgreSQL server on 127.0.0.1 for the scale-out and fault scripts (Debian's package).

    with Postgres(tmp_path) as pg:
        pg.url   # postgresql+psycopg://cxr@127.0.0.1:PORT/cxr
        pg.stop(); pg.start()          # make it unreachable, then bring it back
        pg.create_database("t1", template="cxr")   # another database (a copy): its URL

Needs the server binaries (`apt-get install -y postgresql`; `--install` in the scripts runs that when
root) and the Python driver (`pip install "psycopg[binary]==3.3.9"`). The cluster lives in a temporary
folder, trusts only local connections of its one user, and is removed afterwards.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tools.server import free_port

USER = "cxr"
DATABASE = "cxr"


class PostgresUnavailable(RuntimeError):
    """The server binaries or the Python driver are missing; the message says how to install them."""


def bin_dir() -> Path | None:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


def install() -> None:
    """apt-get install postgresql (root only), without starting Debian's own cluster for long."""
    if os.geteuid() != 0:
        raise PostgresUnavailable("PostgreSQL is not installed; run `sudo apt-get install -y postgresql`.")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]  # as the Makefile's `postgres` target
    subprocess.run([*apt, "update", "-qq"], check=True, env=env)
    subprocess.run([*apt, "install", "-y", "-qq", "postgresql"], check=True, env=env)


def require(auto_install: bool = False) -> Path:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise PostgresUnavailable('The PostgreSQL driver is missing: pip install "psycopg[binary]==3.3.9"') from None
    found = bin_dir()
    if found is None and auto_install:
        install()
        found = bin_dir()
    if found is None:
        raise PostgresUnavailable("PostgreSQL is not installed: apt-get install -y postgresql (or pass --install)")
    return found


class Postgres:
    def __init__(self, workdir: Path | None = None, port: int | None = None, auto_install: bool = False) -> None:
        self.bin = require(auto_install)
        # Directly under the system temp folder: the server runs as `postgres` when we are root, and
        # must be able to reach its data folder (pytest's and our own temp folders are private).
        del workdir
        self._tmp = tempfile.TemporaryDirectory(prefix="cxr-pg-")
        self.root = Path(self._tmp.name)
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.log = self.root / "postgres.log"
        self.port = port or free_port()
        self.url = self.url_of(DATABASE)
        self._demote = None
        if os.geteuid() == 0:  # the server refuses to run as root: run it as Debian's postgres user
            account = pwd.getpwnam("postgres")
            self._demote = (account.pw_uid, account.pw_gid)
            os.chmod(self.root, 0o755)
        self.initialised = False

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        def demote() -> None:
            if self._demote:
                os.setgid(self._demote[1])
                os.setuid(self._demote[0])

        done = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            cwd=self.root,
            capture_output=True,
            text=True,
            preexec_fn=demote if self._demote else None,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {(done.stderr or done.stdout)[-1500:]}")
        return done

    def init(self) -> None:
        for folder in (self.data, self.socket_dir):
            folder.mkdir()
            if self._demote:
                os.chown(folder, *self._demote)
        if self._demote:
            self.log.touch()
            os.chown(self.log, *self._demote)
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "--encoding=UTF8", "--no-sync")
        self.initialised = True

    def start(self) -> None:
        if not self.initialised:
            self.init()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} -c max_connections=100 "
            "-c fsync=on -c synchronous_commit=on"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "-t", "60", "start")
        exists = self.query(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", database="postgres")
        if exists != "1":
            self.create_database(DATABASE)

    def url_of(self, database: str) -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database (a copy of `template`, which nobody may be connected to); returns its URL."""
        copy = ["-T", template] if template else []
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, *copy, name)
        return self.url_of(name)

    def disconnect(self, database: str) -> None:
        """End every connection to the database (the pools of apps that are done with it)."""
        self.query(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{database}'")

    def stop(self, mode: str = "fast") -> None:
        if self.initialised:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def query(self, sql: str, database: str = DATABASE) -> str:
        done = self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", database, "-tAc", sql)
        return done.stdout.strip()

    def __enter__(self) -> Postgres:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop("immediate")
        self._tmp.cleanup()

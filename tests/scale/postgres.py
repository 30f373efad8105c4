"""A private PostgreSQL server for tests and benchmarks: ``initdb`` + ``pg_ctl`` in a temporary
directory, on a free 127.0.0.1 port with its UNIX socket in the same directory. No system service
is touched. As root the server runs as the ``postgres`` user (``runuser``), which PostgreSQL
requires. Binaries: ``HOSTSEAL_PG_BIN``, else the newest ``/usr/lib/postgresql/N/bin`` (Debian's
``postgresql`` package), else ``initdb`` on the PATH.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _version(path: Path) -> int:
    name = path.parent.name
    return int(name) if name.isdigit() else 0


def pg_bin() -> Path | None:
    """The directory with ``initdb`` and ``pg_ctl``, or None."""
    given = os.environ.get("HOSTSEAL_PG_BIN")
    if given:
        candidates = [Path(given)]
    else:
        found = glob.glob("/usr/lib/postgresql/*/bin")
        candidates = sorted((Path(p) for p in found), key=_version, reverse=True)
        which = shutil.which("initdb")
        if which:
            candidates.append(Path(which).resolve().parent)
    for path in candidates:
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    return None


def unavailable() -> str | None:
    """Why no private PostgreSQL can be started here, or None."""
    if pg_bin() is None:
        return (
            "PostgreSQL binaries not found (no /usr/lib/postgresql/N/bin/initdb): install "
            "Debian's 'postgresql' package or set HOSTSEAL_PG_BIN"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' user to run PostgreSQL as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg (3) is not installed: pip install 'psycopg[binary]'"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresCluster:
    """One PostgreSQL server. ``durable=False`` (tests) turns fsync off; benchmarks keep it on."""

    def __init__(self, *, durable: bool = False, max_connections: int = 300) -> None:
        binary = pg_bin()
        if binary is None:
            raise RuntimeError(unavailable())
        self.bin = binary
        self.root = Path(tempfile.mkdtemp(prefix="hostseal-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.durable = durable
        self.max_connections = max_connections
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        os.chmod(self.root, 0o700)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root
        )
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr}{done.stdout}\n{tail}")
        return done

    def init(self) -> PostgresCluster:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")  # fmt: skip
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": str(self.max_connections),
            "shared_buffers": "'128MB'",
            "fsync": "on" if self.durable else "off",
            "synchronous_commit": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
            "log_min_messages": "'warning'",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        return self.start()

    def start(self) -> PostgresCluster:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                  "-t", "60", "start")  # fmt: skip
        return self

    def stop(self, mode: str = "fast") -> None:
        """``fast`` (clients disconnected, a clean shutdown) or ``immediate`` (as a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        conninfo = f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(sql.encode())

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database (a copy of ``template`` when given); its SQLAlchemy URL."""
        clause = f" TEMPLATE {template}" if template else ""
        for attempt in range(50):  # the template is busy while someone else copies it
            try:
                self.execute(f"CREATE DATABASE {name}{clause}")
                break
            except Exception as exc:
                if "being accessed by other users" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.05)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

"""A private PostgreSQL cluster from the machine's binaries, for development (`make run`) and tests.

`LocalCluster` runs ``initdb`` into a folder (once), configures it for logical replication
(``wal_level=logical``, ≥ 20 slots and WAL senders), and starts it listening on 127.0.0.1 on a free port
with its unix socket inside the folder.  When the current process is root, the server runs as the
``postgres`` OS user (Postgres refuses to run as root).  ``stop()`` shuts it down with ``-m fast``; the
context-manager form stops it on exit.

Binaries are found with ``pg_config --bindir``, then the usual Debian/RHEL/Homebrew paths.  If none is found
a :class:`ClusterError` says how to install them.
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
from types import TracebackType

__all__ = ["ClusterError", "LocalCluster", "find_bindir", "free_port"]

SUPERUSER = "postgres"
_INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found. Install them, e.g. "
    "`apt-get install postgresql` (Debian/Ubuntu), `dnf install postgresql-server` (Fedora) or "
    "`brew install postgresql@15` (macOS), or set PG_BINDIR to the folder that holds them, "
    "or set DATABASE_URL to use an existing server."
)

_CONF = """
# written by shapesync (sync/postgres/cluster.py)
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockdir}'
wal_level = logical
max_replication_slots = 40
max_wal_senders = 40
max_connections = 300
shared_buffers = 128MB
fsync = {fsync}
synchronous_commit = on
full_page_writes = {fsync}
logging_collector = off
log_min_messages = warning
max_slot_wal_keep_size = 4GB
wal_sender_timeout = 60s
"""

_HBA = """
local all all trust
local replication all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
"""


class ClusterError(RuntimeError):
    """The local cluster could not be found, initialised or started."""


def find_bindir() -> Path:
    """Locate the folder holding ``initdb``/``pg_ctl``; raise :class:`ClusterError` with a hint if absent."""
    candidates: list[Path] = []
    env = os.environ.get("PG_BINDIR")
    if env:
        candidates.append(Path(env))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir"], check=True, capture_output=True, text=True
            ).stdout.strip()
            candidates.append(Path(out))
    versioned = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
        reverse=True,
    )
    candidates += [Path(p) for p in versioned]
    candidates += [Path(p) for p in sorted(glob.glob("/usr/pgsql-*/bin"), reverse=True)]
    candidates += [Path("/usr/local/bin"), Path("/opt/homebrew/bin"), Path("/usr/bin")]
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists():
            return c
    raise ClusterError(_INSTALL_HINT)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """A Postgres cluster in ``datadir`` (created on first start, kept between runs)."""

    def __init__(
        self,
        root: Path | str,
        *,
        port: int | None = None,
        fsync: bool = True,
        bindir: Path | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.datadir = self.root / "pgdata"
        self.sockdir = self.root / "sock"
        self.logfile = self.root / "postgres.log"
        self.bindir = bindir or find_bindir()
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.superuser = SUPERUSER
        self._fsync = fsync
        self._as_postgres = os.geteuid() == 0

    # -- process helpers -------------------------------------------------------------------------------
    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        kwargs: dict[str, object] = {}
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        proc: subprocess.CompletedProcess[str] = subprocess.run(  # noqa: PLW1510 - checked below
            cmd,
            capture_output=True,
            text=True,
            cwd="/",
            # Own session: a Ctrl-C or SIGTERM aimed at our process group must not reach the postmaster
            # (we stop it ourselves, in order, after the service).
            start_new_session=True,
            **kwargs,  # type: ignore[call-overload]
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def _chown(self, path: Path) -> None:
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    # -- lifecycle -----------------------------------------------------------------------------------
    @property
    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        """``initdb`` the data folder if it does not hold a cluster yet."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            for folder in [self.root, *self.root.parents]:
                if not os.stat(folder).st_mode & 0o001:
                    raise ClusterError(
                        f"{folder} is not traversable by the postgres OS user (the server cannot run as "
                        "root); choose a data folder whose parents are world-executable (chmod o+x)"
                    )
        self._chown(self.root)
        self.sockdir.mkdir(exist_ok=True)
        self._chown(self.sockdir)
        if self.initialised:
            return
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        (self.datadir / "pg_hba.conf").write_text(_HBA)

    def _write_conf(self) -> None:
        auto = self.datadir / "postgresql.auto.conf"
        auto.write_text(
            _CONF.format(port=self.port, sockdir=self.sockdir, fsync="on" if self._fsync else "off")
        )
        self._chown(auto)

    def start(self, timeout: float = 60.0) -> LocalCluster:
        """Initialise if needed, then start and wait until the server accepts connections."""
        self.init()
        self._stop_stale()
        self._write_conf()
        if not self.logfile.exists():
            self.logfile.touch()
        self._chown(self.logfile)
        self._start_and_wait(timeout)
        return self

    def _start_and_wait(self, timeout: float) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60", "start")
        deadline = time.monotonic() + timeout
        while self._run("pg_isready", "-h", self.host, "-p", str(self.port), check=False).returncode:
            if time.monotonic() > deadline:
                raise ClusterError(f"postgres did not become ready; see {self.logfile}")
            time.sleep(0.05)

    def _stop_stale(self) -> None:
        """A postmaster left over from a crashed run holds the folder: stop it before starting."""
        if (self.datadir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "stop", check=False)

    @property
    def running(self) -> bool:
        proc = self._run("pg_ctl", "-D", str(self.datadir), "status", check=False)
        if proc.returncode == 4:  # the data folder is not accessible: we cannot tell, so say so
            raise ClusterError(f"pg_ctl status failed: {proc.stderr.strip()}")
        return proc.returncode == 0

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m <mode>``); a no-op if it is not running."""
        if self.initialised and self.running:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def restore_to_new_timeline(self, timeout: float = 60.0) -> None:
        """Stop, run an archive recovery of the data folder (``recovery.signal``, no archive), which ends on
        a new timeline as a point-in-time restore or a promotion does, and start again (tests)."""
        self.stop()
        signal = self.datadir / "recovery.signal"
        signal.touch()
        self._chown(signal)
        self._write_conf()
        with (self.datadir / "postgresql.auto.conf").open("a") as conf:
            conf.write("restore_command = 'false'\n")  # nothing archived: recovery ends at the local WAL
        self._start_and_wait(timeout)

    def postmaster_pid(self) -> int | None:
        pidfile = self.datadir / "postmaster.pid"
        try:
            return int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq keyword DSN for ``dbname`` as the superuser over TCP."""
        return f"host={self.host} port={self.port} user={self.superuser} dbname={dbname}"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.superuser}@{self.host}:{self.port}/{dbname}"

    @classmethod
    def temporary(cls, *, fsync: bool = False, prefix: str = "shapesync-pg-") -> LocalCluster:
        """A cluster in a new folder under the system temp dir, readable by the ``postgres`` OS user."""
        root = Path(tempfile.mkdtemp(prefix=prefix))
        root.chmod(0o755)
        return cls(root, fsync=fsync)

    def remove(self) -> None:
        """Stop the server and delete its folder."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""The real service in a subprocess, for end-to-end tests and benchmarks.

:class:`ServiceProcess` writes a TOML file over the defaults (the database URL, a free port, a storage folder
of its own, and any extra sections), runs ``python -m sync.cli serve --config <file>`` (gunicorn master +
one gevent worker) in its own process group, and talks HTTP to it.  ``stop()`` followed by ``start()``
restarts it on the same port, storage folder and database, as a deploy would.

Waiting for health polls ``/v1/health`` with a deadline: there is no event to wait on across processes.
Failures raise :class:`ServiceError` with the tail of the service's output.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sync.postgres.cluster import free_port

__all__ = ["ROOT", "ServiceError", "ServiceProcess"]

ROOT = Path(__file__).resolve().parents[1]


class ServiceError(RuntimeError):
    """The service exited, did not become healthy, or did not stop in time."""


class ServiceProcess:
    """``python -m sync.cli serve`` against ``dsn``, on a free port, with its files under ``workdir``."""

    def __init__(
        self,
        dsn: str,
        workdir: Path,
        extra: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        stream_id: str = "e2e",
        log_level: str | None = None,
    ) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.config = workdir / "shapesync.toml"
        self.log = workdir / "service.log"
        sections: dict[str, dict[str, Any]] = {
            "database": {"url": dsn},
            "http": {"port": self.port, "graceful_timeout_s": 5},
            "storage": {"dir": str(workdir / "storage")},
            "replication": {"stream_id": stream_id},
        }
        if log_level is not None:
            sections["logging"] = {"level": log_level}
        for name, values in (extra or {}).items():
            sections.setdefault(name, {}).update(values)
        self.config.write_text(
            "\n".join(
                f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
                for name, values in sections.items()
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SHAPESYNC_CONFIG"}}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sync.cli", "serve", "--config", str(self.config)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
        """``GET path``: status, headers (lower-case names as sent) and body; HTTP errors are returned."""
        req = urllib.request.Request(self.url + path)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers.items()), err.read()

    def wait_healthy(self, status: str = "active", deadline_s: float = 60.0) -> dict[str, Any]:
        """Poll ``/v1/health`` until it reports ``status``; returns its body."""
        deadline = time.monotonic() + deadline_s
        last: object = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise ServiceError(f"service exited with {code}:\n{self.output()[-5000:]}")
            try:
                code, _, body = self.get("/v1/health", timeout=2)
                last = (code, body)
                if json.loads(body).get("status") == status:
                    return dict(json.loads(body))
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as exc:
                last = exc
            time.sleep(0.1)
        raise ServiceError(
            f"service not {status} after {deadline_s}s (last: {last!r}):\n{self.output()[-5000:]}"
        )

    def master_pid(self) -> int | None:
        """The gunicorn master's pid (sync.cli -> gunicorn master): where SIGHUP reloads."""
        if self.proc is None:
            return None
        with contextlib.suppress(OSError):
            for pid in _children(self.proc.pid):
                return pid
        return None

    def worker_pid(self) -> int | None:
        """The gunicorn worker's pid (sync.cli -> gunicorn master -> worker)."""
        master = self.master_pid()
        if master is None:
            return None
        with contextlib.suppress(OSError):
            for worker in _children(master):
                return worker
        return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the process group and wait; SIGKILL and raise if it does not exit within ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise ServiceError(f"service did not stop within {timeout}s:\n{self.output()[-3000:]}") from None


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]

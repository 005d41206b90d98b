"""Configuration: one TOML file read once into a frozen, validated :class:`Settings`.

This is the only module that reads configuration files or ``os.environ`` for settings; everything else is
handed a :class:`Settings`.  Defaults live in ``config/shapesync.toml`` (which documents every key); a file
named by ``SHAPESYNC_CONFIG`` (or ``--config``) is layered on top of them, then environment overrides
(``DATABASE_URL``, ``SHAPESYNC_PORT``, ``SHAPESYNC_STORAGE_DIR``, ``SHAPESYNC_SECRET`` …, see :data:`ENV`).

Any problem — unknown section or key, wrong type, out-of-range value, unreadable file — raises
:class:`ConfigError` with one message naming the key and the expected form.  The CLI prints it and exits
with status 2; it never shows a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

from sync.postgres.tcp_timeout import with_tcp_timeout

__all__ = ["DEFAULTS_FILE", "ENV", "ConfigError", "Settings", "load_settings"]

DEFAULTS_FILE = Path(__file__).resolve().parent.parent / "config" / "shapesync.toml"


class ConfigError(Exception):
    """Bad configuration; the message names the key and the expected form."""


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str = ""
    pooled_url: str = ""
    snapshot_pool_size: int = 8
    snapshot_queue_timeout_s: float = 5.0
    statement_timeout_s: float = 30.0
    lock_timeout_s: float = 5.0
    tcp_timeout_s: float = 60.0  # a server that stops answering is given up after about this; 0: OS defaults


@dataclass(frozen=True, slots=True)
class ReplicationSettings:
    stream_id: str = "default"
    max_batch: int = 500
    status_interval_s: float = 5.0
    receive_timeout_s: float = 60.0  # silence after which the replication connection is given up; 0: never
    backoff_max_s: float = 10.0


@dataclass(frozen=True, slots=True)
class StorageSettings:
    dir: str = "./persistent"
    chunk_bytes_threshold: int = 10 * 1024 * 1024
    flush_interval_ms: int = 50
    flush_bytes: int = 65536
    max_open_files: int = 0  # descriptors kept open by all shape logs together; 0: derived from `ulimit -n`
    sync_method: str = "auto"  # group commit: "syncfs" per filesystem, "fdatasync" per file, or "auto"


@dataclass(frozen=True, slots=True)
class ShapesSettings:
    max_shapes: int = 0
    max_pending_transactions: int = 10000
    max_consumer_queue: int = 50000
    schema_check_interval_s: float = 10.0  # catalog check of dropped/renamed tables and types; 0: never
    log_rotate_ratio: float = 0.0  # a shape's log past this many times its snapshot is rotated; 0: never
    log_rotate_min_mb: int = 64  # ... and past this many MiB


@dataclass(frozen=True, slots=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 3000
    secret: str = ""
    allow_shape_deletion: bool = False
    long_poll_timeout_ms: int = 20000
    sse_timeout_s: int = 60
    sse_keepalive_s: float = 21.0
    cache_max_age_s: int = 60
    cache_stale_age_s: int = 300
    max_concurrent_initial: int = 300
    max_concurrent_existing: int = 10000
    worker_connections: int = 20000
    graceful_timeout_s: int = 10
    backlog: int = 4096
    workers: int = 1


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    enabled: bool = True
    port: int = 0


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: str = "INFO"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable, validated.  Build with :func:`load_settings`."""

    database: DatabaseSettings = DatabaseSettings()
    replication: ReplicationSettings = ReplicationSettings()
    storage: StorageSettings = StorageSettings()
    shapes: ShapesSettings = ShapesSettings()
    http: HttpSettings = HttpSettings()
    metrics: MetricsSettings = MetricsSettings()
    logging: LoggingSettings = LoggingSettings()

    @property
    def publication_name(self) -> str:
        return f"shapesync_pub_{self.replication.stream_id}"

    @property
    def slot_name(self) -> str:
        return f"shapesync_slot_{self.replication.stream_id}"

    @property
    def database_dsn(self) -> str:
        """``database.url`` with the engine's TCP timeouts (:mod:`sync.postgres.tcp_timeout`)."""
        return with_tcp_timeout(self.database.url, self.database.tcp_timeout_s)

    @property
    def snapshot_dsn(self) -> str:
        """``database.pooled_url`` (else ``database.url``) with the engine's TCP timeouts."""
        return with_tcp_timeout(self.database.pooled_url or self.database.url, self.database.tcp_timeout_s)

    def replace(self, section: str, **changes: Any) -> Settings:
        """A copy with some keys of one section changed (validated like a file would be)."""
        merged = {f.name: dataclasses.asdict(getattr(self, f.name)) for f in fields(self)}
        merged[section].update(changes)
        return _build(merged, source="replace()")


#: environment variable -> (section, key)
ENV: dict[str, tuple[str, str]] = {
    "DATABASE_URL": ("database", "url"),
    "SHAPESYNC_POOLED_DATABASE_URL": ("database", "pooled_url"),
    "SHAPESYNC_PORT": ("http", "port"),
    "SHAPESYNC_HOST": ("http", "host"),
    "SHAPESYNC_STORAGE_DIR": ("storage", "dir"),
    "SHAPESYNC_SECRET": ("http", "secret"),
    "SHAPESYNC_STREAM_ID": ("replication", "stream_id"),
    "SHAPESYNC_LOG_LEVEL": ("logging", "level"),
}

_RULES: dict[tuple[str, str], tuple[str, Any]] = {
    # (section, key) -> (expected form, predicate)
    ("database", "snapshot_pool_size"): ("an integer from 1 to 1000", lambda v: 1 <= v <= 1000),
    ("database", "snapshot_queue_timeout_s"): ("a number of seconds > 0", lambda v: v > 0),
    ("database", "statement_timeout_s"): ("a number of seconds > 0", lambda v: v > 0),
    ("database", "lock_timeout_s"): ("a number of seconds > 0", lambda v: v > 0),
    ("database", "tcp_timeout_s"): (
        "0 (the operating system's defaults) or a number of seconds from 2 to 3600",
        lambda v: v == 0 or 2 <= v <= 3600,
    ),
    ("replication", "stream_id"): (
        "1-40 characters of a-z, 0-9 and _",
        lambda v: (
            0 < len(v) <= 40 and all(c.isascii() and (c.islower() or c.isdigit() or c == "_") for c in v)
        ),
    ),
    ("replication", "max_batch"): ("an integer from 1 to 100000", lambda v: 1 <= v <= 100_000),
    ("replication", "status_interval_s"): ("a number of seconds from 0.1 to 60", lambda v: 0.1 <= v <= 60),
    ("replication", "receive_timeout_s"): (
        "0 (never) or a number of seconds from 1 to 3600",
        lambda v: v == 0 or 1 <= v <= 3600,
    ),
    ("replication", "backoff_max_s"): ("a number of seconds from 0.5 to 600", lambda v: 0.5 <= v <= 600),
    ("storage", "dir"): ("a non-empty path", bool),
    ("storage", "chunk_bytes_threshold"): ("an integer number of bytes >= 1", lambda v: v >= 1),
    ("storage", "flush_interval_ms"): ("an integer from 1 to 60000", lambda v: 1 <= v <= 60_000),
    ("storage", "flush_bytes"): ("an integer number of bytes >= 1", lambda v: v >= 1),
    ("storage", "max_open_files"): (
        "0 (automatic) or an integer from 16 to 1000000",
        lambda v: v == 0 or 16 <= v <= 1_000_000,
    ),
    ("storage", "sync_method"): (
        '"auto", "syncfs" or "fdatasync"',
        lambda v: v in ("auto", "syncfs", "fdatasync"),
    ),
    ("shapes", "max_shapes"): ("an integer >= 0 (0 = unlimited)", lambda v: v >= 0),
    ("shapes", "max_pending_transactions"): ("an integer >= 1", lambda v: v >= 1),
    ("shapes", "max_consumer_queue"): ("an integer >= 1", lambda v: v >= 1),
    ("shapes", "schema_check_interval_s"): ("a number of seconds >= 0 (0 = never)", lambda v: v >= 0),
    ("shapes", "log_rotate_ratio"): ("0 (never) or a number >= 1", lambda v: v == 0 or v >= 1),
    ("shapes", "log_rotate_min_mb"): ("an integer number of MiB >= 1", lambda v: v >= 1),
    ("http", "port"): ("an integer from 1 to 65535", lambda v: 1 <= v <= 65535),
    ("http", "host"): ("a host name or address", bool),
    ("http", "long_poll_timeout_ms"): (
        "an integer from 100 to 40000 (clients abort at 45 s)",
        lambda v: 100 <= v <= 40_000,
    ),
    ("http", "sse_timeout_s"): ("an integer from 1 to 3600", lambda v: 1 <= v <= 3600),
    ("http", "sse_keepalive_s"): ("a number of seconds from 0.1 to 3600", lambda v: 0.1 <= v <= 3600),
    ("http", "cache_max_age_s"): ("an integer >= 0", lambda v: v >= 0),
    ("http", "cache_stale_age_s"): ("an integer >= 0", lambda v: v >= 0),
    ("http", "max_concurrent_initial"): ("an integer >= 1", lambda v: v >= 1),
    ("http", "max_concurrent_existing"): ("an integer >= 1", lambda v: v >= 1),
    ("http", "worker_connections"): ("an integer from 10 to 1000000", lambda v: 10 <= v <= 1_000_000),
    ("http", "graceful_timeout_s"): ("an integer >= 0", lambda v: v >= 0),
    ("http", "backlog"): ("an integer >= 1", lambda v: v >= 1),
    ("http", "workers"): (
        "1 (the engine owns one replication stream and lives in a single gevent worker; "
        "scale reads with an HTTP cache in front and writes with more instances, each with its own "
        "replication.stream_id)",
        lambda v: v == 1,
    ),
    ("metrics", "port"): ("0 (serve on the API port) or a port from 1 to 65535", lambda v: 0 <= v <= 65535),
    ("logging", "level"): (
        "one of DEBUG, INFO, WARNING, ERROR",
        lambda v: v.upper() in {"DEBUG", "INFO", "WARNING", "ERROR"},
    ),
}

_SECTIONS: dict[str, type[Any]] = {f.name: get_type_hints(Settings)[f.name] for f in fields(Settings)}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None


def _coerce(section: str, key: str, value: Any, kind: type[Any], source: str) -> Any:
    where = f"{section}.{key}"
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
            return value.lower() in {"true", "1", "yes"}
        raise ConfigError(f"{where} (from {source}) must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ConfigError(f"{where} (from {source}) must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} (from {source}) must be a number, got {value!r}")
    if not isinstance(value, str):
        raise ConfigError(f"{where} (from {source}) must be a string, got {value!r}")
    return value


def _build(data: Mapping[str, Any], source: str) -> Settings:
    sections: dict[str, Any] = {}
    for name, section_cls in _SECTIONS.items():
        raw = data.get(name, {})
        if not isinstance(raw, Mapping):
            raise ConfigError(f"[{name}] (from {source}) must be a table of settings")
        hints = get_type_hints(section_cls)
        known = {f.name for f in fields(section_cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(
                f"unknown setting {name}.{unknown[0]} (from {source}); known keys in [{name}]: "
                + ", ".join(sorted(known))
            )
        values = {k: _coerce(name, k, v, hints[k], source) for k, v in raw.items()}
        for key, value in values.items():
            rule = _RULES.get((name, key))
            if rule is not None and not rule[1](value):
                raise ConfigError(f"{name}.{key} (from {source}) must be {rule[0]}, got {value!r}")
        sections[name] = section_cls(**values)
    unknown_sections = sorted(set(data) - set(_SECTIONS))
    if unknown_sections:
        raise ConfigError(
            f"unknown section [{unknown_sections[0]}] (from {source}); known sections: "
            + ", ".join(sorted(_SECTIONS))
        )
    return Settings(**sections)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k].update(v)
        else:
            out[k] = v
    return out


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults file, then ``path`` (or ``$SHAPESYNC_CONFIG``), then environment overrides."""
    env = os.environ if environ is None else environ
    data = _read_toml(DEFAULTS_FILE) if DEFAULTS_FILE.exists() else {}
    _build(data, source=str(DEFAULTS_FILE))  # the shipped defaults must themselves be valid
    chosen = path or env.get("SHAPESYNC_CONFIG")
    source = "defaults"
    if chosen:
        data = _merge(data, _read_toml(Path(chosen)))
        source = str(chosen)
    overrides: dict[str, dict[str, str]] = {}
    for var, (section, key) in ENV.items():
        if var in env:
            overrides.setdefault(section, {})[key] = env[var]
    if overrides:
        _build(data, source)  # a bad file is reported against the file, not the environment
        data = _merge(data, overrides)
        source = "environment (" + ", ".join(sorted(v for v in ENV if v in env)) + ")"
    return _build(data, source)

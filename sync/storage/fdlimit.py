"""The open-files limit and the descriptor cache's cap derived from it (``storage.max_open_files = 0``).

Why: a shape log writes two files per append, so with thousands of shapes the descriptor cache
(:mod:`sync.storage.fdcache`) is only as good as its cap, and the cap is bounded by ``RLIMIT_NOFILE``.
Servers commonly start with a low soft limit (1,024) under a much higher hard one, so the engine raises the
soft limit to the hard one at start (as nginx, Postgres or the JVM do) and, unless the operator set
``storage.max_open_files``, gives shape logs what is left after the HTTP side's sockets
(``http.max_concurrent_existing + http.max_concurrent_initial``) and a reserve for everything else
(Postgres connections, the replication stream, pipes, logs, the gevent hub ...).
"""

from __future__ import annotations

import logging
import resource

__all__ = [
    "AUTO_MAX",
    "AUTO_MIN",
    "RESERVE",
    "auto_max_open_files",
    "raise_nofile_limit",
    "resolve_max_open_files",
]

log = logging.getLogger(__name__)

RESERVE = 512  # descriptors kept for everything but shape logs and HTTP sockets
AUTO_MIN = 64  # the automatic cap never goes below this (a tiny limit: a warning says so)
AUTO_MAX = 1_000_000  # nor above the largest explicit value accepted
_NR_OPEN = "/proc/sys/fs/nr_open"


def raise_nofile_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (logged); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            with open(_NR_OPEN) as f:  # the kernel's ceiling: an infinite soft limit is refused
                target = int(f.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
            return soft
        log.info("open-files limit raised from %d to %d (the hard limit)", soft, target)
        return target
    return soft if soft != resource.RLIM_INFINITY else target


def auto_max_open_files(soft_limit: int, http_sockets: int) -> int:
    """The cap for shape logs' descriptors under ``soft_limit``, leaving ``http_sockets`` and a reserve."""
    return max(AUTO_MIN, min(AUTO_MAX, soft_limit - http_sockets - RESERVE))


def resolve_max_open_files(configured: int, http_sockets: int) -> int:
    """``storage.max_open_files`` as configured (> 0), or automatic (0); raises the soft limit either way."""
    soft = raise_nofile_limit()
    if configured > 0:
        return configured
    cap = auto_max_open_files(soft, http_sockets)
    if cap == AUTO_MIN:
        log.warning(
            "open-files limit %d leaves no room for shape logs beside %d HTTP sockets: their descriptor "
            "cache is capped at %d (raise `ulimit -n` or lower http.max_concurrent_*)",
            soft,
            http_sockets,
            cap,
        )
    else:
        log.info("storage.max_open_files: %d (automatic, open-files limit %d)", cap, soft)
    return cap

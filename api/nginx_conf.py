"""Render ``config/nginx.conf`` (the caching proxy in front of the service) for a deployment.

Why this module exists: the proxy's timeouts depend on the service's settings (a long-poll must end before
nginx gives up on the upstream, and the cache lock must outlast it so identical live requests collapse),
and its paths depend on where it runs.  The template keeps nginx's own ``$variables`` untouched; only
``{{name}}`` placeholders are filled in here.

    python -m api.nginx_conf --config shapesync.toml --listen 8080 --state-dir /var/lib/shapesync-nginx
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from api.params import ApiSettings
from sync.settings import Settings, load_settings

__all__ = ["TEMPLATE", "NginxOptions", "main", "options_for", "render_nginx_conf"]

TEMPLATE = Path(__file__).resolve().parent.parent / "config" / "nginx.conf"
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")


@dataclass(frozen=True, slots=True)
class NginxOptions:
    """Everything the template needs.  Times are in seconds."""

    listen: str  # "8080" or "127.0.0.1:8080"
    upstream: str  # "127.0.0.1:3000": the service's [http] host:port
    state_dir: Path  # pid file, logs, temp files
    cache_dir: Path  # proxy_cache_path
    long_poll_timeout: float = 20.0
    sse_keepalive_interval: float = 21.0
    cache_max_size: str = "1g"
    worker_connections: int = 16384
    user: str | None = None  # the `user` directive (only meaningful when nginx starts as root)

    def values(self) -> dict[str, str]:
        # A long-poll answers within its timeout; SSE writes at least every keep-alive interval.
        read = math.ceil(max(self.long_poll_timeout, self.sse_keepalive_interval)) + 15
        return {
            "listen": self.listen,
            "upstream": self.upstream,
            "state_dir": str(self.state_dir),
            "cache_dir": str(self.cache_dir),
            "cache_max_size": self.cache_max_size,
            "worker_connections": str(self.worker_connections),
            "long_poll_timeout": f"{self.long_poll_timeout:g}s",
            "read_timeout": f"{read}s",
            "lock_timeout": f"{math.ceil(self.long_poll_timeout) + 10}s",
            "user_directive": f"user {self.user};" if self.user else "",
        }


def options_for(
    settings: Settings, *, listen: str, state_dir: Path, cache_dir: Path | None = None, **extra: object
) -> NginxOptions:
    """Options for a proxy in front of the service configured by ``settings``."""
    api = ApiSettings.from_http(settings.http)
    host = settings.http.host if settings.http.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return NginxOptions(
        listen=listen,
        upstream=f"{host}:{settings.http.port}",
        state_dir=state_dir,
        cache_dir=cache_dir if cache_dir is not None else state_dir / "cache",
        long_poll_timeout=api.long_poll_timeout,
        sse_keepalive_interval=api.sse_keepalive_interval,
        **extra,  # type: ignore[arg-type]
    )


def render_nginx_conf(options: NginxOptions, template: Path = TEMPLATE) -> str:
    """The template with every ``{{placeholder}}`` filled in; an unknown placeholder is an error."""
    values = options.values()

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            msg = f"{template}: unknown placeholder {{{{{name}}}}}"
            raise KeyError(msg)
        return values[name]

    return _PLACEHOLDER.sub(fill, template.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.nginx_conf", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="shapesync TOML file (default: $SHAPESYNC_CONFIG or the defaults)")
    parser.add_argument("--listen", default="8080", help="nginx listen address (default 8080)")
    parser.add_argument("--state-dir", required=True, type=Path, help="pid file, logs and temp files")
    parser.add_argument("--cache-dir", type=Path, help="cache directory (default: <state-dir>/cache)")
    parser.add_argument("--cache-max-size", default="1g", help="proxy_cache_path max_size (default 1g)")
    parser.add_argument("--user", help="the nginx `user` directive (when nginx starts as root)")
    parser.add_argument("--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    options = options_for(
        load_settings(args.config),
        listen=args.listen,
        state_dir=args.state_dir,
        cache_dir=args.cache_dir,
        cache_max_size=args.cache_max_size,
        user=args.user,
    )
    text = render_nginx_conf(options)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``shapesync`` command line: ``shapesync serve [--config FILE] [--dev]``.

``serve`` validates the configuration (a bad value prints one line naming the key and exits 2, never a
traceback), then runs gunicorn with ``config/gunicorn.conf.py``: one gevent worker that starts the engine in
``post_worker_init`` and stops it in ``worker_exit``.  With ``--dev`` and no database URL configured, a local
development Postgres is started under ``.data/`` (kept between runs), seeded with a demo table, and stopped
again when the server exits.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from sync.settings import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = ROOT / "config" / "gunicorn.conf.py"
DEV_DATA = ROOT / ".data"

log = logging.getLogger("shapesync")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shapesync", description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service (gunicorn, one gevent worker)")
    serve.add_argument("--config", help="TOML file layered over config/shapesync.toml (or $SHAPESYNC_CONFIG)")
    serve.add_argument(
        "--dev",
        action="store_true",
        help="start a local development Postgres under .data/ when no database URL is configured",
    )
    serve.add_argument("--dev-data", default=str(DEV_DATA), help="folder of the development Postgres")
    return parser


def _gunicorn_argv(settings: Settings) -> list[str]:
    del settings  # gunicorn.conf.py reads the same settings itself (bind, worker sizing)
    return [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "api.app:get_app()"]


def _run(argv: list[str], env: dict[str, str]) -> int:
    proc = subprocess.Popen(argv, env=env, cwd=ROOT)

    def forward(signum: int, _frame: object) -> None:
        proc.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    return proc.wait()


def serve(config: str | None, dev: bool, dev_data: Path = DEV_DATA) -> int:
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        print(f"shapesync: configuration error: {exc}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if config:
        env["SHAPESYNC_CONFIG"] = str(Path(config).resolve())
    if settings.database.url:
        return _run(_gunicorn_argv(settings), env)
    if not dev:
        print(
            "shapesync: configuration error: database.url is empty; set DATABASE_URL (or database.url in "
            "the config file), or use `shapesync serve --dev` / `make run` for a local development Postgres",
            file=sys.stderr,
        )
        return 2
    from sync.postgres.cluster import ClusterError  # noqa: PLC0415 - only the dev path needs it
    from sync.postgres.devdb import start_dev_database  # noqa: PLC0415

    try:
        cluster, url = start_dev_database(dev_data)
    except ClusterError as exc:
        print(f"shapesync: {exc}", file=sys.stderr)
        return 2
    env["DATABASE_URL"] = url
    print(f"shapesync: development Postgres at {url} (data in {dev_data})", file=sys.stderr)
    try:
        return _run(_gunicorn_argv(settings), env)
    finally:
        print("shapesync: stopping the development Postgres", file=sys.stderr)
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args.config, args.dev, Path(args.dev_data))
    return 2  # pragma: no cover - argparse enforces the sub-command


if __name__ == "__main__":
    sys.exit(main())

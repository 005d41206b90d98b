"""Settings: shipped defaults, file and environment overrides, and one clear message per bad value."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import get_type_hints

import pytest
from psycopg.conninfo import conninfo_to_dict

from sync.settings import DEFAULTS_FILE, ConfigError, Settings, load_settings


def test_shipped_defaults_match_the_dataclass_defaults() -> None:
    assert load_settings(environ={}) == Settings()


def test_every_setting_is_documented_in_the_defaults_file() -> None:
    text = DEFAULTS_FILE.read_text()
    keys = 0
    for section, section_type in get_type_hints(Settings).items():
        assert f"[{section}]" in text
        for key in dataclasses.fields(section_type):
            keys += 1
            assert f"\n{key.name} = " in text, f"{section}.{key.name} missing from {DEFAULTS_FILE}"
    assert keys > 30


def test_file_overrides_defaults_and_env_overrides_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[http]\nport = 4000\nsecret = "s3"\n[storage]\ndir = "/var/lib/x"\n')
    s = load_settings(cfg, environ={})
    assert (s.http.port, s.http.secret, s.storage.dir) == (4000, "s3", "/var/lib/x")
    assert s.replication.stream_id == "default"
    env = {
        "SHAPESYNC_CONFIG": str(cfg),
        "SHAPESYNC_PORT": "5000",
        "DATABASE_URL": "postgresql://u@h/db",
        "SHAPESYNC_STORAGE_DIR": "/srv/shapes",
        "SHAPESYNC_SECRET": "env-secret",
    }
    s = load_settings(environ=env)
    assert s.http.port == 5000
    assert s.database.url == "postgresql://u@h/db"
    assert s.storage.dir == "/srv/shapes"
    assert s.http.secret == "env-secret"
    assert (
        conninfo_to_dict(s.snapshot_dsn)
        == conninfo_to_dict(s.database_dsn)
        == {
            "user": "u",
            "host": "h",
            "dbname": "db",
            "keepalives": "1",
            "keepalives_idle": "30",
            "keepalives_interval": "10",
            "keepalives_count": "3",
            "tcp_user_timeout": "60000",
        }
    )
    pooled = load_settings(environ={**env, "SHAPESYNC_POOLED_DATABASE_URL": "host=p keepalives_idle=5"})
    assert conninfo_to_dict(pooled.snapshot_dsn)["host"] == "p"
    assert conninfo_to_dict(pooled.snapshot_dsn)["keepalives_idle"] == "5"  # the URL's own value wins
    off = pooled.replace("database", tcp_timeout_s=0)
    assert (off.database_dsn, off.snapshot_dsn) == ("postgresql://u@h/db", "host=p keepalives_idle=5")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[http]\nport = 70000\n", "http.port (from {f}) must be an integer from 1 to 65535, got 70000"),
        ('[http]\nport = "abc"\n', "http.port (from {f}) must be an integer, got 'abc'"),
        (
            "[http]\nworkers = 2\n",
            "http.workers (from {f}) must be 1 (the engine owns one replication stream",
        ),
        ("[http]\nprot = 1\n", "unknown setting http.prot (from {f}); known keys in [http]:"),
        ("[htp]\nport = 1\n", "unknown section [htp] (from {f}); known sections:"),
        ("[http]\nallow_shape_deletion = 3\n", "http.allow_shape_deletion (from {f}) must be true or false"),
        ('[replication]\nstream_id = "Bad-Id"\n', "replication.stream_id (from {f}) must be 1-40 characters"),
        ("http = 1\n", "[http] (from {f}) must be a table of settings"),
        ("[http\n", "configuration file {f} is not valid TOML"),
        (
            '[logging]\nlevel = "LOUD"\n',
            "logging.level (from {f}) must be one of DEBUG, INFO, WARNING, ERROR",
        ),
    ],
)
def test_bad_values_name_key_and_expected_form(tmp_path: Path, toml: str, message: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    assert str(info.value).startswith(message.format(f=cfg))


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(
        ConfigError, match=r"http.port \(from environment \(SHAPESYNC_PORT\)\) must be an integer"
    ):
        load_settings(environ={"SHAPESYNC_PORT": "eighty"})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/shapesync.toml", environ={})


def test_replace_validates() -> None:
    s = Settings().replace("http", port=1234)
    assert s.http.port == 1234
    with pytest.raises(ConfigError, match=r"http\.port"):
        Settings().replace("http", port=0)


def test_cli_reports_bad_config_without_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[http]\nworkers = 4\n")
    proc = subprocess.run(
        [sys.executable, "-m", "sync.cli", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "http.workers" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sync_method_is_one_of_three() -> None:
    assert Settings().storage.sync_method == "auto"
    assert Settings().replace("storage", sync_method="fdatasync").storage.sync_method == "fdatasync"
    with pytest.raises(ConfigError, match=r"storage\.sync_method"):
        Settings().replace("storage", sync_method="fsync")

"""config/gunicorn.conf.py's memo of gunicorn's forwarded-header trust gives gunicorn's own verdicts.

The worker memoises, per (config, peer address), whether a peer may set forwarding and scheme headers
(gunicorn parses the address with ``ipaddress`` on every request otherwise).  A memo keyed too loosely would
let one configuration's verdict leak into another's, or a trusted address's into an untrusted one's.
"""

from __future__ import annotations

import importlib.util
import pathlib
import types
from typing import Any

from gunicorn.config import Config
from gunicorn.http import message

CONF = pathlib.Path(__file__).resolve().parents[2] / "config" / "gunicorn.conf.py"

HOSTS = ("10.0.0.1", "10.0.0.2", "192.168.7.9", "172.16.0.1", "::1", "fe80::1", "not-an-address", "127.0.0.1")


def _conf() -> Any:
    spec = importlib.util.spec_from_file_location("shapesync_gunicorn_conf", CONF)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(allow: str) -> Config:
    cfg = Config()
    cfg.set("forwarded_allow_ips", allow)
    return cfg


def _gunicorn_verdict(cfg: Config, host: str) -> bool:
    return bool(message._ip_in_allow_list(host, cfg.forwarded_allow_ips, cfg.forwarded_allow_networks()))


def test_the_memo_is_what_gunicorn_messages_use() -> None:
    conf = _conf()
    assert message.Message._peer_is_trusted_proxy is conf._peer_is_trusted_proxy


def test_each_configuration_and_address_gets_gunicorns_verdict_every_time() -> None:
    conf = _conf()
    configs = [_config("10.0.0.1,192.168.0.0/16,::1"), _config("10.0.0.2,172.16.0.0/12"), _config("*")]
    verdicts = set()
    for _ in range(2):  # the second round answers from the memo
        for cfg in configs:
            for host in HOSTS:
                peer = types.SimpleNamespace(cfg=cfg, peer_addr=(host, 41000))
                expected = _gunicorn_verdict(cfg, host)
                assert conf._peer_is_trusted_proxy(peer) is expected, (cfg.forwarded_allow_ips, host)
                verdicts.add((host, expected))
    # the same address is trusted under one configuration and not under another (a memo keyed by host
    # alone would fail above)
    assert ("10.0.0.1", True) in verdicts and ("10.0.0.1", False) in verdicts


def test_a_unix_socket_peer_is_trusted_as_in_gunicorn() -> None:
    conf = _conf()
    peer = types.SimpleNamespace(cfg=_config("10.0.0.1"), peer_addr="/run/shapesync.sock")
    assert conf._peer_is_trusted_proxy(peer) is True

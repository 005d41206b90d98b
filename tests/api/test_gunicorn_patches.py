"""api/gunicorn_patches.py: the memo of gunicorn's forwarded-header trust gives gunicorn's own verdicts; the
per-worker base environ is gunicorn's; the request-target split is gunicorn's; installing them twice is
installing them once.  api/gunicorn_response.py: a raw answer leaves whole.

The worker memoises, per (config, peer address), whether a peer may set forwarding and scheme headers
(gunicorn parses the address with ``ipaddress`` on every request otherwise).  A memo keyed too loosely would
let one configuration's verdict leak into another's, or a trusted address's into an untrusted one's.

These tests install the patches in the test process, as the worker does in its own
(``ShapesyncWorker.init_process``); ``tests/config/test_gunicorn_conf.py`` shows that loading the
configuration (what gunicorn's master does) installs nothing.
"""

from __future__ import annotations

import importlib
import io
import logging
import types
from typing import Any

import pytest
from gunicorn import util
from gunicorn.config import Config
from gunicorn.http import message, wsgi
from hypothesis import given
from hypothesis import strategies as st

from api import gunicorn_patches as patches
from api.gunicorn_response import WorkerResponse
from api.raw_response import RawResponse

HOSTS = ("10.0.0.1", "10.0.0.2", "192.168.7.9", "172.16.0.1", "::1", "fe80::1", "not-an-address", "127.0.0.1")


@pytest.fixture(autouse=True, scope="module")
def _installed() -> None:
    patches.install()


def _config(allow: str) -> Config:
    cfg = Config()
    cfg.set("forwarded_allow_ips", allow)
    return cfg


def _gunicorn_verdict(cfg: Config, host: str) -> bool:
    return bool(message._ip_in_allow_list(host, cfg.forwarded_allow_ips, cfg.forwarded_allow_networks()))


def test_the_memo_is_what_gunicorn_messages_use() -> None:
    assert message.Message._peer_is_trusted_proxy is patches.peer_is_trusted_proxy


def test_each_configuration_and_address_gets_gunicorns_verdict_every_time() -> None:
    configs = [_config("10.0.0.1,192.168.0.0/16,::1"), _config("10.0.0.2,172.16.0.0/12"), _config("*")]
    verdicts = set()
    for _ in range(2):  # the second round answers from the memo
        for cfg in configs:
            for host in HOSTS:
                peer = types.SimpleNamespace(cfg=cfg, peer_addr=(host, 41000))
                expected = _gunicorn_verdict(cfg, host)
                assert patches.peer_is_trusted_proxy(peer) is expected, (cfg.forwarded_allow_ips, host)
                verdicts.add((host, expected))
    # the same address is trusted under one configuration and not under another (a memo keyed by host
    # alone would fail above)
    assert ("10.0.0.1", True) in verdicts and ("10.0.0.1", False) in verdicts


def test_a_unix_socket_peer_is_trusted_as_in_gunicorn() -> None:
    peer = types.SimpleNamespace(cfg=_config("10.0.0.1"), peer_addr="/run/shapesync.sock")
    assert patches.peer_is_trusted_proxy(peer) is True


def test_installing_again_or_reloading_the_module_keeps_gunicorns_own_as_the_stock() -> None:
    stock = patches.stock_base_environ
    assert stock.__module__ == "gunicorn.http.wsgi"
    patches.install()
    assert wsgi.base_environ is patches.base_environ
    assert message.split_request_uri is patches.split_request_uri
    reloaded = importlib.reload(patches)  # the module loaded again after install(): gunicorn's still
    try:
        assert reloaded.stock_base_environ is stock
    finally:
        reloaded.install()  # the reloaded module's functions are what gunicorn calls from here on


def test_the_base_environ_is_gunicorns_but_for_a_shared_errors_wrapper() -> None:
    assert wsgi.base_environ is patches.base_environ
    one, two = Config(), Config()
    two.set("workers", 2)
    for cfg in (one, two, one):
        got, stock = patches.base_environ(cfg), patches.stock_base_environ(cfg)
        assert got.keys() == stock.keys()
        assert {k: v for k, v in got.items() if k != "wsgi.errors"} == {
            k: v for k, v in stock.items() if k != "wsgi.errors"
        }
        assert isinstance(got["wsgi.errors"], wsgi.WSGIErrorsWrapper)
    first = patches.base_environ(one)
    first["wsgi.input"] = "mutated"  # a request's environ is its own copy
    assert "wsgi.input" not in patches.base_environ(one)
    assert patches.base_environ(one)["wsgi.errors"] is first["wsgi.errors"]
    assert patches.base_environ(two)["wsgi.multiprocess"] is True


def test_the_shared_errors_wrapper_writes_where_gunicorns_would_at_write_time() -> None:
    cfg = Config()
    cfg.set("errorlog", "/dev/null")  # not "-": the logger's handlers' streams only
    errors = patches.base_environ(cfg)["wsgi.errors"]
    logger = logging.getLogger("gunicorn.error")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)  # added after the wrapper was made: found when written to
    try:
        errors.write("boom\n")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "boom\n"


class _ShortSocket:
    """Takes 100 bytes per send (a full socket buffer); sendall takes the rest."""

    def __init__(self) -> None:
        self.got: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.got.append(data[:100])
        return 100

    def sendall(self, data: memoryview) -> None:
        self.got.append(bytes(data))


def test_a_raw_answer_is_sent_whole_when_one_send_takes_only_part() -> None:
    sock = _ShortSocket()
    response: Any = types.SimpleNamespace(  # stands in for a gunicorn Response
        req=types.SimpleNamespace(version=(1, 1)), should_close=lambda: False, version="gunicorn", sock=sock
    )
    body = bytes(range(256)) * 40
    WorkerResponse.send_raw(response, RawResponse("200 OK", b"x-a: b\r\ncontent-length: 10240\r\n", body))
    sent = b"".join(sock.got)
    assert len(sock.got) == 2 and sent.startswith(b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: ")
    assert sent.endswith(b"\r\nConnection: keep-alive\r\nx-a: b\r\ncontent-length: 10240\r\n\r\n" + body)


@given(st.text(alphabet="/?#:&=%a1 \t\r\n.", max_size=24))
def test_request_targets_split_as_gunicorn_splits_them(uri: str) -> None:
    assert patches.split_request_uri(uri) == util.split_request_uri(uri)


def test_request_target_examples() -> None:
    assert message.split_request_uri is patches.split_request_uri
    for uri in (
        "/v1/shape?table=a&offset=-1",
        "/v1/shape",
        "/?",
        "/a?b?c",
        "//x/y?z",
        "/a#f?b",
        "http://h/p?q",
    ):
        assert patches.split_request_uri(uri) == util.split_request_uri(uri)

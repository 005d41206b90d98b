"""A host name in the DSN is resolved off the gevent hub (python-stack §3: libpq's own lookup blocks).

The scenario runs in a subprocess under ``gevent.monkey.patch_all()`` (this process is unpatched) with a
resolver that takes 0.5 s: the connection to ``localhost`` must succeed, must have gone through that
resolver (so libpq did not resolve the name itself, on the hub), and the hub must have kept running while
it resolved.
"""

from __future__ import annotations

from sync.postgres.connect import resolve_attempts
from tests.fixtures.scenario import run_scenario


def test_localhost_resolves_off_the_hub_under_gevent(db_dsn: str) -> None:
    out = run_scenario("tests.postgres.dns_gevent_scenario", db_dsn, timeout=60)
    assert out["gevent"] is True
    assert out["identified"] is True
    assert out["lookups"] == ["localhost"], out  # resolved by us, not inside libpq
    assert out["connect_s"] >= 0.5, out  # the slow lookup really was on the path
    assert out["max_stall_s"] < 0.3, out  # ... and the hub kept running meanwhile


def test_attempts_keep_the_host_name_and_add_its_address() -> None:
    (attempt,) = resolve_attempts("host=localhost port=5999 dbname=x")
    assert "host=localhost" in attempt and "hostaddr=127.0.0.1" in attempt
    assert resolve_attempts("host=/tmp port=5999") == ["host=/tmp port=5999"]

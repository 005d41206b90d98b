"""Fixtures of the API tests.

``backend`` is the engine under test plus a driver that changes its data.  It is parametrised so that the
protocol tests of ``test_shape_*.py`` can run against the real engine later: add a param that yields an
object with the same driver methods (``create_table``, ``insert``, ``truncate``) over Postgres and whose
``engine`` attribute is the real :class:`api.engine_port.ShapeEngine`.  Tests that need to poke at engine
internals (failures, status) use the ``fake`` fixture directly instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, cast

import falcon
import falcon.testing
import pytest

from api.engine_port import ShapeEngine
from api.params import ApiSettings
from api.shape_resource import install_shape_api
from tests.api.fake_engine import FakeEngine


class Backend(Protocol):
    """An engine plus a driver of its data.  Each driver call returns once the engine has seen the change
    (a real backend waits until the shape's latest offset moved, or the handle rotated, before returning)."""

    engine: ShapeEngine

    def create_table(self, rows: list[dict[str, str]]) -> str:
        """A new table ``(id int primary key, title text)`` holding ``rows``; returns its name."""
        ...

    def insert(self, table: str, row: dict[str, str]) -> None:
        """Insert ``row`` in its own transaction."""
        ...

    def truncate(self, table: str) -> None:
        """TRUNCATE the table (its shapes rotate)."""
        ...

    def wait_for_waiter(self, timeout: float) -> bool:
        """Block until a live request is parked on the engine (True) or ``timeout`` passes (False)."""
        ...


class FakeBackend:
    engine: ShapeEngine  # the fake, which has no subset_snapshot (subsets are tested on the real engine)

    def __init__(self, fake: FakeEngine) -> None:
        self.engine = cast(ShapeEngine, fake)
        self.create_table = fake.create_table
        self.insert = fake.insert
        self.truncate = fake.truncate

    def wait_for_waiter(self, timeout: float) -> bool:
        fake = cast(FakeEngine, self.engine)
        ok = fake.waiter_registered.wait(timeout)
        fake.waiter_registered.clear()
        return ok


TEST_SETTINGS = ApiSettings(
    long_poll_timeout=1.0,
    sse_timeout=1.5,
    sse_keepalive_interval=0.4,
    cache_max_age=1,
    cache_stale_age=3,
    allow_shape_deletion=True,
)


@pytest.fixture
def fake() -> Iterator[FakeEngine]:
    engine = FakeEngine()
    yield engine
    engine.stop()


@pytest.fixture(params=["fake"])
def backend(request: pytest.FixtureRequest, fake: FakeEngine) -> Backend:
    assert request.param == "fake"
    return FakeBackend(fake)


@pytest.fixture
def settings() -> ApiSettings:
    return TEST_SETTINGS


def build_app(engine: Any, settings: ApiSettings, **kwargs: Any) -> falcon.App[Any, Any]:
    app: falcon.App[Any, Any] = falcon.App(cors_enable=False)
    install_shape_api(app, engine, settings, **kwargs)
    return app


@pytest.fixture
def make_client(backend: Backend, settings: ApiSettings) -> Callable[..., falcon.testing.TestClient]:
    def make(settings_: ApiSettings | None = None, **kwargs: Any) -> falcon.testing.TestClient:
        return falcon.testing.TestClient(build_app(backend.engine, settings_ or settings, **kwargs))

    return make


@pytest.fixture
def client(make_client: Callable[..., falcon.testing.TestClient]) -> falcon.testing.TestClient:
    return make_client()

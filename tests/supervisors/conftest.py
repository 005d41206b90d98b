"""Fixtures for the supervisor tests: fail any test that leaves a pykka actor running."""

from __future__ import annotations

from collections.abc import Iterator

import pykka
import pytest

from tests.supervisors.actors import Journal


@pytest.fixture(autouse=True)
def _no_actor_left() -> Iterator[None]:
    yield
    leftover = pykka.ActorRegistry.get_all()
    if leftover:
        pykka.ActorRegistry.stop_all(block=True, timeout=5)
        pytest.fail(f"actors still alive at teardown: {leftover}")


@pytest.fixture
def journal() -> Journal:
    return Journal()

"""``Background``: one call (a request, say) run in a daemon thread while the test goes on, its result
joined later.  Shared by the in-process and the real-service API tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Background(Generic[T]):
    """Runs ``fn`` in a thread; ``result()`` joins it (``timeout`` seconds unless given) and returns its
    value."""

    def __init__(self, fn: Callable[[], T], *, timeout: float = 10.0) -> None:
        self._timeout = timeout
        self._result: list[T] = []
        self._thread = threading.Thread(target=lambda: self._result.append(fn()), daemon=True)
        self._thread.start()

    def result(self, timeout: float | None = None) -> T:
        self._thread.join(self._timeout if timeout is None else timeout)
        assert self._result, "request did not finish"
        return self._result[0]

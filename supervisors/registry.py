"""Names for actors, scoped per stack (Electric's ``ProcessRegistry.name(stack_id, role)``).

Why this module exists: pykka can only look actors up by class or URN, and refs change on every
restart. A `Registry` maps names to the *current* incarnation: a name is released automatically when
its actor exits (a lifecycle watcher, no polling), and the restarted actor registers the same name
again, typically in its ``on_start``::

    def on_start(self) -> None:
        Registry(self.stack_id).register("shape_cache", self.actor_ref)

``Registry(stack_id)`` returns the one registry of that stack, so every module of a stack finds the
same names without passing the registry around; stacks never see each other's names. Lookups are a
dict read under a short lock: safe from any thread/greenlet, never an ask.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import pykka

from supervisors.errors import AlreadyStarted, ExitReason
from supervisors.lifecycle import lifecycle_of

__all__ = ["Registry"]


class Registry:
    """Name -> live ``ActorRef`` for one stack."""

    _stacks: ClassVar[dict[str, Registry]] = {}
    _stacks_lock: ClassVar[threading.Lock] = threading.Lock()

    stack_id: str
    _names: dict[str, tuple[pykka.ActorRef[Any], int | None]]
    _lock: threading.Lock

    def __new__(cls, stack_id: str) -> Registry:
        with cls._stacks_lock:
            registry = cls._stacks.get(stack_id)
            if registry is None:
                registry = super().__new__(cls)
                registry.stack_id = stack_id
                registry._names = {}
                registry._lock = threading.Lock()
                cls._stacks[stack_id] = registry
            return registry

    def __repr__(self) -> str:
        return f"Registry({self.stack_id!r})"

    def register(self, name: str, ref: pykka.ActorRef[Any]) -> None:
        """Bind ``name`` to ``ref`` until it exits; `AlreadyStarted` if a live actor holds it."""
        life = lifecycle_of(ref)
        with self._lock:
            current = self._names.get(name)
            if current is not None and current[0] is not ref and current[0].is_alive():
                msg = f"{self!r}: name {name!r} is already registered to {current[0]}"
                raise AlreadyStarted(msg)
            if current is not None and current[0] is ref:
                return
            self._names[name] = (ref, None)
        if current is not None:
            lifecycle_of(current[0]).cancel(current[1])

        def release(_reason: ExitReason, _started: bool) -> None:
            self._release(name, ref)

        token = life.on_exit(release)
        with self._lock:
            if token is not None and self._names.get(name, (None,))[0] is ref:
                self._names[name] = (ref, token)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (no error if absent)."""
        with self._lock:
            entry = self._names.pop(name, None)
        if entry is not None:
            lifecycle_of(entry[0]).cancel(entry[1])

    def whereis(self, name: str) -> pykka.ActorRef[Any] | None:
        """The live actor registered as ``name``, or None."""
        with self._lock:
            entry = self._names.get(name)
        if entry is None or not entry[0].is_alive():
            return None
        return entry[0]

    def names(self) -> dict[str, pykka.ActorRef[Any]]:
        """A copy of the live registrations."""
        with self._lock:
            entries = list(self._names.items())
        return {name: ref for name, (ref, _) in entries if ref.is_alive()}

    def _release(self, name: str, ref: pykka.ActorRef[Any]) -> None:
        with self._lock:
            entry = self._names.get(name)
            if entry is not None and entry[0] is ref:
                del self._names[name]

"""Parse and validate the query of ``/v1/shape`` (spec §2) into a frozen :class:`ShapeRequest`.

Why a pure module: the validation rules and their exact error strings are part of the protocol (the TS client
and its tests assert them), so they live here without any HTTP or engine dependency and are unit-tested
rule by rule.  The order follows Electric's ``Api.Params.validate``: cast errors (``replica``, ``log``,
``params`` format) and a missing ``offset`` are reported together; every later check runs only if nothing
failed before it (offset format -> handle -> live -> live_sse -> table -> params numbering).  Table, where
and columns are checked against the catalog by the engine, which raises the same error body shape.

Also here: :class:`ApiSettings`, the API's frozen settings (the lead maps the TOML file onto it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

import orjson
from falcon.uri import parse_query_string

from api.engine_port import InvalidRequest, LogMode, Replica, ShapeDefinition
from sync.offsets import INF, LogOffset

if TYPE_CHECKING:
    from sync.settings import HttpSettings

__all__ = [
    "NOW",
    "ApiSettings",
    "DeleteRequest",
    "RequestOffset",
    "ShapeRequest",
    "parse_delete_request",
    "parse_query",
    "parse_shape_request",
]

NOW: Literal["now"] = "now"
RequestOffset = LogOffset | Literal["now"]

_OFFSET = re.compile(r"\A([0-9]+)_([0-9]+|inf)\Z")
_PARAM_KEY = re.compile(r"\Aparams\[(.*)\]\Z", re.DOTALL)
_SUBSET_PREFIX = "subset__"


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """Settings of the HTTP API (times in seconds)."""

    long_poll_timeout: float = 20.0  # ELECTRIC_LONG_POLL_TIMEOUT (ms there)
    sse_timeout: float = 60.0  # an SSE stream closes after this
    sse_keepalive_interval: float = 21.0  # ": keep-alive" after this long without a message
    cache_max_age: int = 60  # ELECTRIC_CACHE_MAX_AGE
    cache_stale_age: int = 300  # ELECTRIC_CACHE_STALE_AGE
    secret: str | None = None  # ELECTRIC_SECRET: when set, /v1/shape needs ?secret= (or ?api_secret=)
    allow_shape_deletion: bool = False  # DELETE /v1/shape enabled
    max_concurrent_initial: int = 300  # admission: requests without a handle (or at offset -1)
    max_concurrent_existing: int = 10_000  # admission: requests for an existing handle (incl. live)
    server_header: str = "ElectricSQL/1.7.12"  # electric-server header value
    stream_buffer_bytes: int = 256 * 1024  # body pieces are coalesced up to this size before a write
    max_request_body_bytes: int = 1024 * 1024  # POST /v1/shape bodies above this get 413

    @classmethod
    def from_http(cls, http: HttpSettings) -> ApiSettings:
        """Map the ``[http]`` section of the TOML settings onto the API's settings."""
        return cls(
            long_poll_timeout=http.long_poll_timeout_ms / 1000,
            sse_timeout=float(http.sse_timeout_s),
            sse_keepalive_interval=http.sse_keepalive_s,
            cache_max_age=http.cache_max_age_s,
            cache_stale_age=http.cache_stale_age_s,
            secret=http.secret or None,
            allow_shape_deletion=http.allow_shape_deletion,
            max_concurrent_initial=http.max_concurrent_initial,
            max_concurrent_existing=http.max_concurrent_existing,
        )

    @property
    def out_of_bounds_timeout(self) -> float:
        """How long an out-of-bounds offset waits for the shape to catch up before the 400 (spec §3)."""
        return self.long_poll_timeout / 2


@dataclass(frozen=True, slots=True)
class ShapeRequest:
    """A validated GET/HEAD ``/v1/shape`` request.

    ``handle`` is None when the offset is ``-1``/``now`` (spec: ignored there, the shape is resolved by its
    definition).  ``subset`` collects the ``subset__*`` parameters unvalidated (subset snapshots come later).
    """

    definition: ShapeDefinition
    offset: RequestOffset
    handle: str | None = None
    live: bool = False
    live_sse: bool = False
    cursor: str | None = None
    secret: str | None = None
    expired_handle: str | None = None
    subset: tuple[tuple[str, str], ...] = field(default=())

    @property
    def is_now(self) -> bool:
        return isinstance(self.offset, str)

    @property
    def is_before_all(self) -> bool:
        return isinstance(self.offset, LogOffset) and self.offset.is_before_all

    @property
    def log_offset(self) -> LogOffset:
        """The offset as a LogOffset; only valid when not ``now``."""
        if isinstance(self.offset, LogOffset):
            return self.offset
        raise ValueError("offset is 'now'")

    @property
    def offset_text(self) -> str:
        """The offset as it appears in the etag (``-1``, ``now``, ``<tx>_<op>``)."""
        return str(self.offset)


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    """A validated ``DELETE /v1/shape``: a definition (optionally with a handle), or a handle alone."""

    definition: ShapeDefinition | None
    handle: str | None


def parse_query(query_string: str) -> dict[str, str]:
    """Decode a raw query string; a bare ``&live`` gives ``""``; a repeated key keeps its last value."""
    parsed = parse_query_string(query_string, keep_blank=True, csv=False)
    return {k: (v[-1] if isinstance(v, list) else v) for k, v in parsed.items()}


def _truthy(query: Mapping[str, str], *names: str) -> bool:
    """Spec §2: any value except "false" is true, a bare flag counts; absent is false."""
    return any(name in query and query[name] != "false" for name in names)


def _blank(value: str | None) -> bool:
    return value is None or value == ""


def _cast_params(query: Mapping[str, str], errors: dict[str, list[str]]) -> dict[str, str]:
    """Collect ``params[n]=v`` (the client's form) or ``params=<JSON object>``; keys are checked later."""
    collected: dict[str, str] = {}
    for key, value in query.items():
        if key.startswith("params["):
            m = _PARAM_KEY.match(key)
            if m is not None:
                collected[m.group(1)] = value
    raw = query.get("params")
    if not _blank(raw):
        assert raw is not None
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            decoded = None
        if not isinstance(decoded, dict):
            errors["params"] = ["is invalid"]
            return {}
        for key, value in decoded.items():
            collected[str(key)] = value if isinstance(value, str) else orjson.dumps(value).decode()
    return collected


def _numbered_params(collected: Mapping[str, str]) -> tuple[str, ...]:
    """Order ``$1..$n``; keys must be numbers numbered sequentially from 1 (Electric's exact messages)."""
    numbers: dict[int, str] = {}
    for key, value in collected.items():
        if not key.isascii() or not key.isdigit():
            raise InvalidRequest({"params": ["Parameters can only use numbers as keys"]})
        numbers[int(key)] = value
    if sorted(numbers) != list(range(1, len(numbers) + 1)):
        raise InvalidRequest({"params": ["Parameters must be numbered sequentially, starting from 1"]})
    return tuple(numbers[i] for i in range(1, len(numbers) + 1))


def _cast_enum(
    query: Mapping[str, str], name: str, allowed: tuple[str, ...], errors: dict[str, list[str]]
) -> str:
    value = query.get(name)
    if _blank(value):
        return allowed[0]
    assert value is not None
    if value not in allowed:
        errors[name] = ["is invalid"]
        return allowed[0]
    return value


def _cast_bool(query: Mapping[str, str], name: str, errors: dict[str, list[str]]) -> bool:
    """Ecto's boolean cast (used for ``experimental_compaction``): true/false/1/0."""
    value = query.get(name)
    if _blank(value):
        return False
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    errors[name] = ["is invalid"]
    return False


def _definition_fields(
    query: Mapping[str, str], errors: dict[str, list[str]]
) -> tuple[Replica, LogMode, bool, dict[str, str]]:
    replica: Replica = (
        "full" if _cast_enum(query, "replica", ("default", "full"), errors) == "full" else "default"
    )
    log_text = _cast_enum(query, "log", ("full", "changes_only"), errors)
    log_mode: LogMode = "changes_only" if log_text == "changes_only" else "full"
    compaction = _cast_bool(query, "experimental_compaction", errors)
    collected = _cast_params(query, errors)
    return replica, log_mode, compaction, collected


def _parse_offset(text: str) -> RequestOffset:
    """``now``, ``-1``, ``<int>_<int>`` or ``<int>_inf``; like Electric, leading zeros are accepted."""
    if text == NOW:
        return NOW
    if text == "-1":
        return LogOffset.BEFORE_ALL
    m = _OFFSET.match(text)
    if m is None:
        raise InvalidRequest({"offset": ["has invalid format"]})
    return LogOffset(int(m.group(1)), INF if m.group(2) == "inf" else int(m.group(2)))


def _text(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name)
    return None if _blank(value) else value


def parse_shape_request(query: Mapping[str, str]) -> ShapeRequest:
    """Validate the decoded query of a GET/HEAD ``/v1/shape``; raises :class:`InvalidRequest`.

    Memoised on the query without its ``subset__*`` values (a pure function of it; a client repeats the
    same query request after request, and subsets differ in their ``subset__params`` only)."""
    shape: list[tuple[str, str]] = []
    subset: list[tuple[str, str]] = []
    for item in query.items():
        (subset if item[0].startswith(_SUBSET_PREFIX) else shape).append(item)
    request = _parse_memo(tuple(shape))
    return replace(request, subset=tuple(subset)) if subset else request


@lru_cache(maxsize=4096)
def _parse_memo(query: tuple[tuple[str, str], ...]) -> ShapeRequest:
    return _parse_shape_request(dict(query))


def _parse_shape_request(query: Mapping[str, str]) -> ShapeRequest:
    errors: dict[str, list[str]] = {}
    replica, log_mode, compaction, collected = _definition_fields(query, errors)
    offset_text = query.get("offset")
    if _blank(offset_text):
        errors["offset"] = ["can't be blank"]
    if errors:
        raise InvalidRequest(errors)
    assert offset_text is not None

    offset = _parse_offset(offset_text)

    by_definition = offset == NOW or (isinstance(offset, LogOffset) and offset.is_before_all)
    handle = _text(query, "handle")
    if by_definition:
        handle = None
    elif handle is None:
        raise InvalidRequest({"handle": ["can't be blank when offset != -1"]})

    live = _truthy(query, "live")
    if live and offset == NOW:
        raise InvalidRequest({"live": ["can't be true when offset is 'now'"]})
    if live and by_definition:
        raise InvalidRequest({"live": ["can't be true when offset == -1"]})

    live_sse = _truthy(query, "live_sse", "experimental_live_sse")
    if live_sse and not live:
        raise InvalidRequest({"live_sse": ["can't be true unless live is also true"]})

    table = _text(query, "table")
    if table is None:
        raise InvalidRequest({"table": ["can't be blank"]})

    definition = ShapeDefinition(
        table=table,
        where=_text(query, "where"),
        params=_numbered_params(collected),
        columns=_text(query, "columns"),
        replica=replica,
        log_mode=log_mode,
        compaction=compaction,
    )
    return ShapeRequest(
        definition=definition,
        offset=offset,
        handle=handle,
        live=live,
        live_sse=live_sse,
        cursor=_text(query, "cursor"),
        secret=_text(query, "secret") or _text(query, "api_secret"),
        expired_handle=_text(query, "expired_handle"),
    )


def parse_delete_request(query: Mapping[str, str]) -> DeleteRequest:
    """Validate a DELETE: ``table`` (+definition, optional ``handle``) or ``handle`` alone."""
    handle = _text(query, "handle")
    table = _text(query, "table")
    if table is None:
        if handle is None:
            raise InvalidRequest({"handle": ["can't be blank when shape definition is missing"]})
        return DeleteRequest(definition=None, handle=handle)
    errors: dict[str, list[str]] = {}
    replica, log_mode, compaction, collected = _definition_fields(query, errors)
    if errors:
        raise InvalidRequest(errors)
    definition = ShapeDefinition(
        table=table,
        where=_text(query, "where"),
        params=_numbered_params(collected),
        columns=_text(query, "columns"),
        replica=replica,
        log_mode=log_mode,
        compaction=compaction,
    )
    return DeleteRequest(definition=definition, handle=handle)

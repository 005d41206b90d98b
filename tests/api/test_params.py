"""Spec §2: every query rule of /v1/shape and its exact error body."""

from __future__ import annotations

import pytest

from api.engine_port import InvalidRequest, ShapeDefinition
from api.params import NOW, ApiSettings, parse_delete_request, parse_query, parse_shape_request
from sync.offsets import INF, LogOffset
from sync.settings import HttpSettings


def errors_of(query: str) -> dict[str, list[str]]:
    with pytest.raises(InvalidRequest) as info:
        parse_shape_request(parse_query(query))
    assert info.value.message == "Invalid request"
    return info.value.errors


def parse(query: str):  # type: ignore[no-untyped-def]
    return parse_shape_request(parse_query(query))


def test_missing_offset_reports_only_offset() -> None:
    assert errors_of("") == {"offset": ["can't be blank"]}
    assert errors_of("where=x&handle=h&live=true") == {"offset": ["can't be blank"]}
    assert errors_of("offset=") == {"offset": ["can't be blank"]}


def test_missing_table_after_offset_checks() -> None:
    assert errors_of("offset=-1") == {"table": ["can't be blank"]}
    assert errors_of("offset=-1&table=") == {"table": ["can't be blank"]}


@pytest.mark.parametrize(
    "offset",
    ["10", "0_-1", "abc", "-2", "1_", "_1", "1_1_1", "0_infinity", " 0_0", "1_2%20", "10_32.1", "NOW"],
)
def test_invalid_offset_format(offset: str) -> None:
    assert errors_of(f"table=t&offset={offset}") == {"offset": ["has invalid format"]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-1", LogOffset.BEFORE_ALL),
        ("0_0", LogOffset(0, 0)),
        ("0_inf", LogOffset(0, INF)),
        ("123_4", LogOffset(123, 4)),
    ],
)
def test_valid_offsets(text: str, expected: LogOffset) -> None:
    req = parse(f"table=t&offset={text}&handle=h")
    assert req.offset == expected
    assert req.offset_text == text


def test_offset_leading_zeros_accepted_and_canonical() -> None:
    req = parse("table=t&offset=0_02&handle=h")
    assert req.offset == LogOffset(0, 2)
    assert req.offset_text == "0_2"


def test_offset_now() -> None:
    req = parse("table=t&offset=now&handle=h")
    assert req.offset == NOW and req.is_now and req.offset_text == "now"
    assert req.handle is None  # ignored: resolved by definition


def test_handle_required_unless_before_all_or_now() -> None:
    assert errors_of("table=t&offset=0_0") == {"handle": ["can't be blank when offset != -1"]}
    assert errors_of("table=t&offset=0_0&handle=") == {"handle": ["can't be blank when offset != -1"]}
    assert parse("table=t&offset=-1&handle=h").handle is None
    assert parse("table=t&offset=0_0&handle=h").handle == "h"


def test_handle_error_precedes_table_error() -> None:
    assert errors_of("offset=5_0") == {"handle": ["can't be blank when offset != -1"]}


def test_live_not_allowed_with_before_all_or_now() -> None:
    assert errors_of("table=t&offset=-1&live=true") == {"live": ["can't be true when offset == -1"]}
    assert errors_of("table=t&offset=now&live=true") == {"live": ["can't be true when offset is 'now'"]}


@pytest.mark.parametrize("flag", ["live", "live=", "live=true", "live=1", "live=0", "live=no", "live=False"])
def test_live_truthiness_anything_but_false(flag: str) -> None:
    assert parse(f"table=t&offset=0_0&handle=h&{flag}").live is True


def test_live_false_and_absent() -> None:
    assert parse("table=t&offset=0_0&handle=h&live=false").live is False
    assert parse("table=t&offset=0_0&handle=h").live is False
    assert parse("table=t&offset=-1&live=false").live is False


def test_live_sse_needs_live() -> None:
    expected = {"live_sse": ["can't be true unless live is also true"]}
    assert errors_of("table=t&offset=0_0&handle=h&live_sse=true") == expected
    assert errors_of("table=t&offset=0_0&handle=h&experimental_live_sse") == expected
    assert errors_of("table=t&offset=-1&live_sse=true") == expected


def test_live_sse_and_deprecated_alias() -> None:
    assert parse("table=t&offset=0_0&handle=h&live&live_sse=true").live_sse is True
    assert parse("table=t&offset=0_0&handle=h&live&experimental_live_sse=true").live_sse is True
    assert parse("table=t&offset=0_0&handle=h&live&live_sse=false").live_sse is False


def test_replica_and_log_mode() -> None:
    req = parse("table=t&offset=-1&replica=full&log=changes_only")
    assert req.definition.replica == "full" and req.definition.log_mode == "changes_only"
    req = parse("table=t&offset=-1")
    assert req.definition.replica == "default" and req.definition.log_mode == "full"
    assert errors_of("table=t&offset=-1&replica=partial") == {"replica": ["is invalid"]}
    assert errors_of("table=t&offset=-1&log=some") == {"log": ["is invalid"]}


def test_cast_errors_reported_with_missing_offset_and_stop_later_checks() -> None:
    assert errors_of("replica=x") == {"replica": ["is invalid"], "offset": ["can't be blank"]}
    # a cast error stops the offset format check, as in Electric's changeset pipeline
    assert errors_of("replica=x&offset=bad") == {"replica": ["is invalid"]}


def test_params_numbered_form() -> None:
    req = parse("table=t&offset=-1&where=a%3D%241&params%5B2%5D=y&params[1]=x")
    assert req.definition.params == ("x", "y")
    assert req.definition.where == "a=$1"


def test_params_json_form() -> None:
    req = parse('table=t&offset=-1&params={"1":"x","2":5}')
    assert req.definition.params == ("x", "5")


def test_params_errors() -> None:
    assert errors_of("table=t&offset=-1&params[a]=x") == {
        "params": ["Parameters can only use numbers as keys"]
    }
    assert errors_of("table=t&offset=-1&params[2]=x") == {
        "params": ["Parameters must be numbered sequentially, starting from 1"]
    }
    assert errors_of("table=t&offset=-1&params[1]=x&params[3]=y") == {
        "params": ["Parameters must be numbered sequentially, starting from 1"]
    }
    assert errors_of("table=t&offset=-1&params=notjson") == {"params": ["is invalid"]}


def test_params_checked_after_table() -> None:
    assert errors_of("offset=-1&params[2]=x") == {"table": ["can't be blank"]}


def test_definition_and_extras() -> None:
    req = parse(
        "table=items&offset=5_2&handle=h&live&cursor=123&where=x%3E1&columns=%22id%22,title"
        "&secret=s&expired_handle=old&cache-buster=1&log=full&subset__where_expr=zz&unknown=1"
    )
    assert req.definition == ShapeDefinition(table="items", where="x>1", columns='"id",title')
    assert req.offset == LogOffset(5, 2)
    assert req.handle == "h" and req.live and req.cursor == "123" and req.secret == "s"
    assert req.expired_handle == "old"
    assert req.subset == (("subset__where_expr", "zz"),)


def test_api_secret_legacy() -> None:
    assert parse("table=t&offset=-1&api_secret=x").secret == "x"


def test_compaction_flag() -> None:
    assert parse("table=t&offset=-1&experimental_compaction=true").definition.compaction is True
    assert errors_of("table=t&offset=-1&experimental_compaction=yes") == {
        "experimental_compaction": ["is invalid"]
    }


def test_repeated_key_keeps_last_value() -> None:
    assert parse("table=a&table=b&offset=-1").definition.table == "b"


def test_delete_request_forms() -> None:
    d = parse_delete_request(parse_query("table=t&handle=h"))
    assert d.definition == ShapeDefinition(table="t") and d.handle == "h"
    d = parse_delete_request(parse_query("handle=h"))
    assert d.definition is None and d.handle == "h"
    with pytest.raises(InvalidRequest) as info:
        parse_delete_request(parse_query(""))
    assert info.value.errors == {"handle": ["can't be blank when shape definition is missing"]}


def test_api_settings_from_http_settings() -> None:
    http = HttpSettings(
        secret="",
        allow_shape_deletion=True,
        long_poll_timeout_ms=1500,
        sse_timeout_s=30,
        cache_max_age_s=1,
        cache_stale_age_s=3,
        max_concurrent_initial=5,
        max_concurrent_existing=6,
    )
    s = ApiSettings.from_http(http)
    assert (s.long_poll_timeout, s.sse_timeout, s.out_of_bounds_timeout) == (1.5, 30.0, 0.75)
    assert (s.cache_max_age, s.cache_stale_age) == (1, 3)
    assert s.secret is None and s.allow_shape_deletion
    assert (s.max_concurrent_initial, s.max_concurrent_existing) == (5, 6)
    assert ApiSettings.from_http(HttpSettings(secret="x")).secret == "x"

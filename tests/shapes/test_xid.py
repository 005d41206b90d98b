from __future__ import annotations

import random

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.shapes.snapshot import SNAPSHOT_INFO_QUERY, parse_lsn
from sync.shapes.xid import PgSnapshot, SnapshotFilter, widen_xid

EPOCH = 1 << 32


def test_parse_and_format() -> None:
    s = PgSnapshot.parse("10:20:12,15")
    assert (s.xmin, s.xmax, s.xip) == (10, 20, frozenset({12, 15}))
    assert str(s) == "10:20:12,15" and s.xip_sorted == [12, 15]
    assert PgSnapshot.parse("7:7:") == PgSnapshot(7, 7, frozenset())
    for bad in ["", "1:2", "a:b:", "5:4:", "1:5:7", "1:5:0"]:
        with pytest.raises(ValueError, match="pg_snapshot"):
            PgSnapshot.parse(bad)


def test_visibility_rules() -> None:
    s = PgSnapshot.parse("10:20:12,15")
    assert [x for x in range(5, 25) if s.is_visible(x)] == [5, 6, 7, 8, 9, 10, 11, 13, 14, 16, 17, 18, 19]


def test_widen_across_epoch_boundary() -> None:
    ref = 5 * EPOCH + 5  # just after the wrap into epoch 5
    assert widen_xid(EPOCH - 3, ref) == 5 * EPOCH - 3  # before the wrap: previous epoch
    assert widen_xid(7, ref) == 5 * EPOCH + 7
    ref = 5 * EPOCH - 2  # just before the wrap
    assert widen_xid(3, ref) == 5 * EPOCH + 3  # after the wrap: next epoch
    assert widen_xid(EPOCH - 10, ref) == 5 * EPOCH - 10


def test_filter_stops_at_first_commit_past_the_snapshot_lsn() -> None:
    f = SnapshotFilter(PgSnapshot.parse("100:110:105"), wal_lsn=1000)
    assert f.keep(99, 500) is False  # committed before the snapshot
    assert f.keep(105, 600) is True  # in progress at snapshot time
    assert f.keep(112, 700) is True  # began after xmax (or was running): not visible
    assert f.active
    assert f.keep(106, 800) is False  # visible, even after a transaction with xid >= xmax
    assert f.keep(113, 1000) is True
    assert not f.active
    assert f.keep(101, 1100) is True  # no longer checked


def test_commit_record_race_does_not_duplicate() -> None:
    # T1 (xid 800) wrote its commit record first but left the proc array after the snapshot; T2 (xid 790)
    # committed after T1 in the WAL yet is visible.  Stopping at the first xid >= xmax would keep T2 twice.
    f = SnapshotFilter(PgSnapshot.parse("791:791:"), wal_lsn=5000)
    assert f.keep(800, 4000) is True
    assert f.keep(790, 4100) is False


@st.composite
def scenario(draw: st.DrawFn) -> tuple[PgSnapshot, list[int]]:
    epoch = draw(st.integers(0, 1 << 20))
    low = draw(st.integers(3, EPOCH - 1))
    xmin = epoch * EPOCH + low
    xmax = xmin + draw(st.integers(0, 5000))
    xip = (
        frozenset(draw(st.sets(st.integers(xmin, max(xmin, xmax - 1)), max_size=20)))
        if xmax > xmin
        else frozenset()
    )
    snap = PgSnapshot(xmin, xmax, xip)
    window = 1 << 30
    lo = max(3, xmin - window)
    visible = (
        draw(st.lists(st.integers(lo, xmax - 1).filter(snap.is_visible), max_size=10, unique=True))
        if xmax - 1 >= lo
        else []
    )
    later = draw(
        st.lists(
            st.one_of(
                st.sampled_from(sorted(xip)) if xip else st.nothing(), st.integers(xmax, xmax + window)
            ),
            max_size=10,
            unique=True,
        )
    )
    return snap, visible + later


@given(scenario(), st.integers(1, 1 << 40))
@settings(max_examples=400, deadline=None)
def test_filter_matches_64bit_truth(case: tuple[PgSnapshot, list[int]], wal_lsn: int) -> None:
    snap, xids = case
    f = SnapshotFilter(snap, wal_lsn)
    for lsn, x in enumerate(xids, 1):  # every one of them committed before the snapshot's WAL position
        assert f.keep(x % EPOCH, wal_lsn - lsn) == (not snap.is_visible(x)), x
        assert widen_xid(x % EPOCH, snap.xmax) == x
    assert f.active
    assert f.keep(snap.xmax % EPOCH, wal_lsn) is True
    assert not f.active


def test_visibility_against_postgres(db_dsn: str) -> None:
    rng = random.Random(7)
    cases: list[tuple[str, int]] = []
    for _ in range(300):
        xmin = rng.choice(
            [3, EPOCH - 60, 7 * EPOCH + rng.randrange(3, EPOCH - 60)]
        )  # low bits 0-2 never occur
        xmax = xmin + rng.randrange(0, 40)
        xip = sorted(rng.sample(range(xmin, xmax), k=min(3, xmax - xmin))) if xmax > xmin else []
        snap = f"{xmin}:{xmax}:{','.join(map(str, xip))}"
        for x in (xmin - 1, xmin, xmax - 1, xmax, *xip, rng.randrange(xmin, xmax + 1)):
            if x >= 3:
                cases.append((snap, x))
    with psycopg.connect(db_dsn) as conn:
        got = conn.execute(
            "SELECT array_agg(pg_visible_in_snapshot(x::text::xid8, s::pg_snapshot) ORDER BY i)"
            " FROM unnest(%s::text[], %s::int8[]) WITH ORDINALITY AS c(s, x, i)",
            ([c[0] for c in cases], [c[1] for c in cases]),
        ).fetchone()
    assert got is not None
    assert got[0] == [PgSnapshot.parse(s).is_visible(x) for s, x in cases]


def test_real_snapshot_with_in_progress_transaction(db_dsn: str) -> None:
    with psycopg.connect(db_dsn) as writer, psycopg.connect(db_dsn) as reader:
        writer.execute("CREATE TABLE t (x int)")
        writer.commit()
        done = writer.execute(
            "INSERT INTO t VALUES (1) RETURNING pg_current_xact_id()::text::int8"
        ).fetchone()
        writer.commit()
        open_xid = writer.execute(
            "INSERT INTO t VALUES (2) RETURNING pg_current_xact_id()::text::int8"
        ).fetchone()
        row = reader.execute(SNAPSHOT_INFO_QUERY).fetchone()
        reader.commit()
        writer.commit()
        after = writer.execute(
            "INSERT INTO t VALUES (3) RETURNING pg_current_xact_id()::text::int8"
        ).fetchone()
        # its commit record goes after this position
        lsns = writer.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        writer.commit()
    assert done and open_xid and row and after and lsns
    snap = PgSnapshot.parse(row[0])
    wal_lsn = parse_lsn(row[1])
    f = SnapshotFilter(snap, wal_lsn)
    assert not snap.is_visible(
        open_xid[0]
    )  # running: in xip, or >= xmax (PG 14+ xmax = latest completed + 1)
    assert [f.keep(done[0] % EPOCH, wal_lsn - 100), f.keep(open_xid[0] % EPOCH, wal_lsn - 50)] == [
        False,
        True,
    ]
    assert parse_lsn(lsns[0]) >= wal_lsn
    assert f.keep(after[0] % EPOCH, parse_lsn(lsns[0])) is True
    assert not f.active

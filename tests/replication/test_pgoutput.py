"""pgoutput decoding on real messages captured from Postgres (see sqlslot.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from sync.replication.changes import (
    UNCHANGED_TOAST,
    Delete,
    Insert,
    RelationChanged,
    TransactionFragment,
    Truncate,
    Update,
)
from sync.replication.pgoutput import PgOutputDecoder, ProtocolError, RelationCache
from tests.replication.sqlslot import SqlSlot


@pytest.fixture
def slot(db_dsn: str) -> Iterator[SqlSlot]:
    s = SqlSlot(db_dsn)
    yield s
    s.close()


def fragments(events: list[TransactionFragment | RelationChanged]) -> list[TransactionFragment]:
    return [e for e in events if isinstance(e, TransactionFragment)]


def changes(events: list[TransactionFragment | RelationChanged]) -> list[object]:
    return [c for f in fragments(events) for c in f.changes]


def test_insert_update_delete_nulls_and_pk_change_default_identity(slot: SqlSlot) -> None:
    slot.execute("CREATE TABLE items (id int PRIMARY KEY, title text, n int, tags text[])")
    slot.add_table("items")
    slot.execute("INSERT INTO items VALUES (1, 'a', NULL, '{x,y}'), (2, NULL, 5, NULL)")
    slot.execute("UPDATE items SET title = 'b' WHERE id = 1")
    slot.execute("UPDATE items SET id = 10 WHERE id = 2")
    slot.execute("DELETE FROM items WHERE id = 10")
    events = slot.decode()

    rel_events = [e for e in events if isinstance(e, RelationChanged)]
    assert len(rel_events) == 1 and rel_events[0].previous is None
    rel = rel_events[0].relation
    assert (rel.schema, rel.name, rel.replica_identity) == ("public", "items", "d")
    assert [c.name for c in rel.columns] == ["id", "title", "n", "tags"]
    assert [c.is_key for c in rel.columns] == [True, False, False, False]
    assert [c.type_oid for c in rel.columns] == [23, 25, 23, 1009]

    frags = fragments(events)
    assert len(frags) == 4  # four transactions, one fragment each
    assert all(f.begin and f.commit and f.end_lsn is not None for f in frags)
    assert [f.commit_lsn for f in frags] == sorted({f.commit_lsn for f in frags})
    assert all(f.end_lsn is not None and f.end_lsn > f.commit_lsn for f in frags)
    ins = frags[0].changes
    assert ins == (Insert(rel, ("1", "a", None, "{x,y}"), 0), Insert(rel, ("2", None, "5", None), 2))
    (upd,) = frags[1].changes
    assert upd == Update(rel, ("1", "b", None, "{x,y}"), None, None, 0)
    (pk,) = frags[2].changes
    assert isinstance(pk, Update) and pk.old_kind == "K"
    assert pk.old == ("2", None, None, None) and pk.new == ("10", None, "5", None)
    (dele,) = frags[3].changes
    assert dele == Delete(rel, ("10", None, None, None), "K", 0)


def test_replica_identity_full_pk_change_and_unchanged_toast(slot: SqlSlot) -> None:
    slot.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, note text)")
    slot.execute("ALTER TABLE docs REPLICA IDENTITY FULL")
    slot.execute("ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL")  # force out-of-line TOAST
    slot.add_table("docs")
    big = secrets.token_hex(20_000)  # 40 kB, stored out of line
    slot.execute("INSERT INTO docs VALUES (1, %s, 'n1')", (big,))
    slot.execute("UPDATE docs SET note = 'n2' WHERE id = 1")  # body unchanged -> 'u'
    slot.execute("UPDATE docs SET id = 2 WHERE id = 1")  # PK change under FULL
    slot.execute("DELETE FROM docs")
    events = slot.decode()
    rel = next(e.relation for e in events if isinstance(e, RelationChanged))
    assert rel.replica_identity == "f"
    assert all(c.is_key for c in rel.columns)  # FULL marks every column as key
    ins, upd, pk, dele = changes(events)
    assert isinstance(ins, Insert) and ins.new == ("1", big, "n1")
    assert isinstance(upd, Update)
    assert upd.new == ("1", UNCHANGED_TOAST, "n2")
    assert upd.old_kind == "O" and upd.old == ("1", big, "n1")  # FULL carries the TOASTed value
    assert isinstance(pk, Update) and pk.old_kind == "O"
    assert pk.old == ("1", big, "n2") and pk.new == ("2", UNCHANGED_TOAST, "n2")
    assert isinstance(dele, Delete) and dele.old_kind == "O" and dele.old == ("2", big, "n2")


def test_unchanged_toast_under_default_identity_and_very_large_value(slot: SqlSlot) -> None:
    slot.execute("CREATE TABLE blobs (id int PRIMARY KEY, body text, b bytea, n int)")
    slot.add_table("blobs")
    huge = secrets.token_hex(3_000_000)  # 6 MB of text
    slot.execute("INSERT INTO blobs VALUES (1, %s, '\\x00ff'::bytea, 1)", (huge,))
    slot.execute("UPDATE blobs SET n = 2")
    ins, upd = changes(slot.decode())
    assert isinstance(ins, Insert) and ins.new == ("1", huge, "\\x00ff", "1")
    assert isinstance(upd, Update) and upd.old is None
    assert upd.new == ("1", UNCHANGED_TOAST, "\\x00ff", "2")


def test_enum_type_message_and_value(slot: SqlSlot) -> None:
    slot.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
    slot.execute("CREATE TABLE people (id int PRIMARY KEY, m mood)")
    slot.add_table("people")
    slot.execute("INSERT INTO people VALUES (1, 'happy')")
    cache = RelationCache()
    events = slot.decode(cache=cache)
    rel = next(e.relation for e in events if isinstance(e, RelationChanged))
    mood_oid = rel.columns[1].type_oid
    assert cache.types[mood_oid] == ("public", "mood")
    (ins,) = changes(events)
    assert isinstance(ins, Insert) and ins.new == ("1", "happy")


def test_truncate_cascade_and_restart_identity(slot: SqlSlot) -> None:
    slot.execute("CREATE TABLE parent (id serial PRIMARY KEY)")
    slot.execute("CREATE TABLE child (id int PRIMARY KEY, p int REFERENCES parent)")
    slot.add_table("parent")
    slot.add_table("child")
    slot.execute("INSERT INTO parent DEFAULT VALUES")
    slot.execute("TRUNCATE parent RESTART IDENTITY CASCADE")
    slot.execute("TRUNCATE child")
    events = slot.decode()
    truncates = [c for c in changes(events) if isinstance(c, Truncate)]
    assert len(truncates) == 2
    first, second = truncates
    assert first.cascade and first.restart_identity
    assert {r.name for r in first.relations} == {"parent", "child"}
    assert not second.cascade and not second.restart_identity
    assert [r.name for r in second.relations] == ["child"]


def test_table_renamed_and_altered_mid_stream(slot: SqlSlot) -> None:
    slot.execute("CREATE TABLE t1 (id int PRIMARY KEY, a text)")
    slot.add_table("t1")
    slot.execute("INSERT INTO t1 VALUES (1, 'x')")
    slot.execute("ALTER TABLE t1 RENAME TO t2")
    slot.execute("INSERT INTO t2 VALUES (2, 'y')")
    slot.execute("ALTER TABLE t2 ADD COLUMN b int, ALTER COLUMN a TYPE varchar(10)")
    slot.execute("INSERT INTO t2 VALUES (3, 'z', 7)")
    slot.execute("ALTER TABLE t2 REPLICA IDENTITY FULL")
    slot.execute("UPDATE t2 SET b = 8 WHERE id = 3")
    slot.execute("INSERT INTO t2 VALUES (4, 'w', 9)")  # unchanged relation: no new event
    events = slot.decode()
    kinds = ["R" if isinstance(e, RelationChanged) else "F" for e in events]
    assert kinds == ["R", "F", "R", "F", "R", "F", "R", "F", "F"]
    rels = [e for e in events if isinstance(e, RelationChanged)]
    assert rels[0].previous is None
    assert rels[1].previous == rels[0].relation and rels[1].relation.name == "t2"
    assert rels[2].relation.column_names == ("id", "a", "b")
    assert rels[2].relation.columns[1].type_oid == 1043  # varchar
    assert rels[3].relation.replica_identity == "f"
    ins3 = changes(events)[2]
    assert isinstance(ins3, Insert) and ins3.relation is rels[2].relation and ins3.new == ("3", "z", "7")
    assert len({r.relation.oid for r in rels}) == 1


def test_fragments_say_whether_the_reader_was_behind(slot: SqlSlot) -> None:
    """``decoder.behind`` (set by the replication reader) is copied into every fragment decoded meanwhile."""
    slot.execute("CREATE TABLE bh (id int PRIMARY KEY)")
    slot.add_table("bh")
    slot.execute("INSERT INTO bh SELECT generate_series(1, 3)")
    slot.execute("INSERT INTO bh SELECT generate_series(4, 6)")
    out: list[TransactionFragment | RelationChanged] = []
    decoder = PgOutputDecoder(out.append, max_batch=2)
    for m in slot.messages():
        decoder.feed(m)
        if any(isinstance(e, TransactionFragment) and e.commit for e in out):
            decoder.behind = True  # from the second transaction on
    frags = fragments(out)
    assert [(len(f.changes), f.commit, f.behind) for f in frags] == [
        (2, False, False),
        (1, True, False),
        (2, False, True),
        (1, True, True),
    ]


def test_fragments_bounded_by_max_batch_with_offsets(slot: SqlSlot) -> None:
    slot.execute("CREATE TABLE n (id int PRIMARY KEY)")
    slot.add_table("n")
    slot.execute("INSERT INTO n SELECT generate_series(1, 25)")
    slot.execute("INSERT INTO n VALUES (100)")
    slot.execute("BEGIN; INSERT INTO n SELECT generate_series(200, 219); COMMIT")
    frags = fragments(slot.decode(max_batch=10))
    assert [len(f.changes) for f in frags] == [10, 10, 5, 1, 10, 10]
    assert [(f.begin, f.commit) for f in frags] == [
        (True, False),
        (False, False),
        (False, True),
        (True, True),
        (True, False),
        (False, True),  # a full buffer is only handed over when more follows: no empty commit fragment
    ]
    first_tx = frags[:3]
    assert len({f.commit_lsn for f in first_tx}) == 1 and len({f.xid for f in first_tx}) == 1
    assert [c.op for f in first_tx for c in f.changes] == list(range(0, 50, 2))
    assert [f.end_lsn is None for f in first_tx] == [True, True, False]
    assert all(f.commit_time_us is not None for f in frags)


def test_skip_through_drops_processed_transactions(slot: SqlSlot) -> None:
    slot.execute("CREATE TABLE s (id int PRIMARY KEY)")
    slot.add_table("s")
    for i in range(4):
        slot.execute("INSERT INTO s VALUES (%s)", (i,))
    msgs = slot.messages()
    all_frags: list[TransactionFragment | RelationChanged] = []
    dec = PgOutputDecoder(all_frags.append)
    for m in msgs:
        dec.feed(m)
    lsns = [f.commit_lsn for f in fragments(all_frags)]
    assert dec.last_commit_lsn == lsns[-1]
    out: list[TransactionFragment | RelationChanged] = []
    dec2 = PgOutputDecoder(out.append, skip_through=lsns[1])
    for m in msgs:
        dec2.feed(m)
    assert [f.commit_lsn for f in fragments(out)] == lsns[2:]
    assert any(isinstance(e, RelationChanged) for e in out)  # cache still filled while skipping


def test_origin_and_logical_messages_are_accepted(slot: SqlSlot) -> None:
    slot.execute("CREATE TABLE o (id int PRIMARY KEY)")
    slot.add_table("o")
    slot.execute("SELECT pg_replication_origin_create('upstream')")
    slot.execute("SELECT pg_replication_origin_session_setup('upstream')")
    slot.execute("BEGIN")
    slot.execute("SELECT pg_replication_origin_xact_setup('0/10', now())")
    slot.execute("INSERT INTO o VALUES (1)")
    slot.execute("SELECT pg_logical_emit_message(true, 'pfx', 'transactional')")
    slot.execute("COMMIT")
    slot.execute("SELECT pg_logical_emit_message(false, 'pfx', 'loose')")
    slot.execute("SELECT pg_replication_origin_session_reset()")
    raw = slot.messages(messages=True)
    assert sorted({chr(m[0]) for m in raw}) == ["B", "C", "I", "M", "O", "R"]
    out: list[TransactionFragment | RelationChanged] = []
    dec = PgOutputDecoder(out.append)
    for m in raw:
        dec.feed(m)
    (ins,) = changes(out)
    assert isinstance(ins, Insert) and ins.new == ("1",)


def test_protocol_errors_are_explicit() -> None:
    dec = PgOutputDecoder(lambda _e: None)
    with pytest.raises(ProtocolError, match="unexpected pgoutput message 'S'"):
        dec.feed(b"S\x00\x00\x00\x01\x01")
    with pytest.raises(ProtocolError, match="Commit outside"):
        dec.feed(b"C" + bytes(25))
    with pytest.raises(ValueError, match="max_batch"):
        PgOutputDecoder(lambda _e: None, max_batch=0)


def test_hot_path_values_equal_normally_built_ones(slot: SqlSlot) -> None:
    slot.execute("CREATE TABLE h (id int PRIMARY KEY, v text)")
    slot.add_table("h")
    slot.execute("INSERT INTO h VALUES (1, 'x'), (2, NULL)")
    events = slot.decode(max_batch=1)
    rel = next(e.relation for e in events if isinstance(e, RelationChanged))
    frags = fragments(events)
    assert frags[0] == TransactionFragment(
        frags[0].xid,
        frags[0].commit_lsn,
        (Insert(rel, ("1", "x"), 0),),
        True,
        False,
        None,
        frags[0].commit_time_us,
    )
    assert hash(frags[1].changes[0]) == hash(Insert(rel, ("2", None), 2))
    with pytest.raises(AttributeError):
        frags[0].changes[0].op = 5  # type: ignore[misc]


def test_non_ascii_values(slot: SqlSlot) -> None:
    slot.execute("CREATE TABLE u (id int PRIMARY KEY, v text, w text)")
    slot.add_table("u")
    slot.execute("INSERT INTO u VALUES (1, 'héllo ✓ 日本', 'plain'), (2, 'ascii', NULL)")
    ins1, ins2 = changes(slot.decode())
    assert isinstance(ins1, Insert) and ins1.new == ("1", "héllo ✓ 日本", "plain")
    assert isinstance(ins2, Insert) and ins2.new == ("2", "ascii", None)


def test_whole_frames_decode_like_payloads(slot: SqlSlot) -> None:
    slot.execute("CREATE TABLE f (id int PRIMARY KEY, v text)")
    slot.execute("ALTER TABLE f REPLICA IDENTITY FULL")
    slot.add_table("f")
    slot.execute("INSERT INTO f VALUES (1, 'é'), (2, NULL)")
    slot.execute("UPDATE f SET v = 'x' WHERE id = 1")
    slot.execute("DELETE FROM f WHERE id = 2")
    slot.execute("TRUNCATE f")
    msgs = slot.messages()
    by_payload: list[TransactionFragment | RelationChanged] = []
    by_frame: list[TransactionFragment | RelationChanged] = []
    dec_payload = PgOutputDecoder(by_payload.append, max_batch=1)
    dec_frame = PgOutputDecoder(by_frame.append, max_batch=1)
    for i, m in enumerate(msgs):
        header = b"w" + bytes((0x80 + i) % 256 for _ in range(24))  # non-ASCII like real LSNs
        dec_payload.feed(m)
        dec_frame.feed_frame(header + m)
    assert by_frame == by_payload
    assert len(changes(by_frame)) == 5

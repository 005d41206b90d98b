"""How the snapshot worker hands range blocks to storage: big blocks as they are, small ones joined."""

from __future__ import annotations

from sync.shapes.snapshot_worker import STORE_ALONE, STORE_BYTES, store_messages


def test_big_blocks_go_as_they_are_and_small_ones_are_joined_in_order() -> None:
    small = [(i + 1, bytes([97 + i]) * 1000) for i in range(3)]
    big = (7, b"B" * STORE_ALONE)
    out = list(store_messages([*small, big, small[0], big]))
    assert [(m.block[:1], m.count, rows, size) for m, rows, size in out] == [
        (b"a", 6, 6, 3000),
        (b"B", 7, 7, STORE_ALONE),
        (b"a", 1, 1, 1000),
        (b"B", 7, 7, STORE_ALONE),
    ]
    assert out[0][0].block == b",".join(b for _, b in small)
    assert out[1][0].block is big[1]  # not copied


def test_small_blocks_are_joined_up_to_store_bytes() -> None:
    piece = b"x" * (STORE_ALONE - 1)
    n = STORE_BYTES // len(piece) + 1
    out = list(store_messages([(1, piece)] * (n + 2)))
    assert [rows for _, rows, _ in out] == [n, 2]
    assert sum(size for _, _, size in out) == (n + 2) * len(piece)
    assert all(m.count == rows and len(m.block) == size + rows - 1 for m, rows, size in out)
    assert list(store_messages([])) == []

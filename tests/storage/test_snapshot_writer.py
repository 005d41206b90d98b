"""Bulk snapshot layout: the chunk closes placed by C-level scans equal the per-item rule of the live log."""

from __future__ import annotations

from itertools import accumulate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.offsets import LogOffset
from sync.storage.format import CHUNK, ChunkEntry
from sync.storage.positions import SeqPosition
from sync.storage.snapshot_writer import (
    ITEM_BOUNDARY,
    SEP_BOUNDARY,
    Boundary,
    join_items,
    layout_block,
    split_items,
)


def reference(
    sizes: list[int], open_bytes: int, threshold: int, base_items: int, base_json: int
) -> list[ChunkEntry]:
    """Per item: a chunk closes after the item bringing its JSON bytes (separators excluded) to >= threshold."""
    out = []
    ends = list(accumulate((s + 1 for s in sizes), initial=base_json))[1:]
    for i, size in enumerate(sizes):
        open_bytes += size
        if open_bytes >= threshold:
            out.append(ChunkEntry(base_items + i + 1, 0, base_items + i, ends[i]))
            open_bytes = 0
    return out


@pytest.mark.parametrize("boundary", [SEP_BOUNDARY, ITEM_BOUNDARY])
@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(st.lists(st.integers(0, 40), min_size=1, max_size=30), min_size=1, max_size=5),
    threshold=st.integers(1, 120),
)
def test_layout_equals_the_per_item_rule(
    boundary: Boundary, batches: list[list[int]], threshold: int
) -> None:
    pos = SeqPosition()
    all_items: list[bytes] = []
    entries: list[ChunkEntry] = []
    json = b""
    for sizes in batches:
        # item objects as the snapshot writes them, with "}}", ",", '{"key":' inside their strings too
        items = [b'{"key":"' + b"},{k}}"[: s % 7] + b"x" * s + b'"}}' for s in sizes]
        joined = join_items(items) if boundary == SEP_BOUNDARY else b",".join(items)
        assert split_items(joined, boundary) == items
        out = layout_block(joined, len(items), pos, threshold, boundary)
        json += out.json + b","
        entries.extend(ChunkEntry(*e) for e in CHUNK.iter_unpack(out.chunks))
        all_items.extend(items)
    all_sizes = [len(i) for i in all_items]
    assert entries == reference(all_sizes, 0, threshold, 0, 0)
    assert pos.items == len(all_sizes) and pos.json_len == len(json) == sum(all_sizes) + len(all_sizes)
    assert json == b",".join(all_items) + b","
    assert pos.chunks == len(entries)
    assert pos.last == LogOffset(0, len(all_sizes) - 1)
    last_end = entries[-1].end_item if entries else 0
    assert pos.open_chunk_bytes == sum(all_sizes[last_end:])


def test_layout_rejects_too_many_items_and_separators_at_the_ends() -> None:
    with pytest.raises(ValueError, match="1 items"):
        layout_block(b"a\x1eb", 1, SeqPosition(), 1)
    for bad in (b"", b"\x1ea", b"a\x1e"):
        with pytest.raises(ValueError, match="separators"):
            layout_block(bad, 1, SeqPosition(), 10)

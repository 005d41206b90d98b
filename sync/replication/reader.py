"""The replication reader loop: connect, set up, stream, decode, deliver with backpressure, acknowledge.

Why this module exists: hard spot 1 (architecture §6).  The ReplicationClient actor's inbox receives
acknowledgements while this loop, spawned by the actor, services the socket continuously: it drains
XLogData into the decoder, answers keepalives that ask for a reply, and sends a standby status update on a
timer well inside ``wal_sender_timeout`` -- also while it waits for a slow downstream, when it stops reading
(the server keeps processing our replies while its send buffer is full).  Only this loop touches the
connection, which is what serialises every libpq call on it; the actor thread only writes integers into
the :class:`~sync.replication.acks.AckTracker`.

Two bounds keep the downstream from falling far behind: at most ``max_in_flight`` deliveries are
outstanding (the sink's futures), and at a transaction boundary the loop holds the stream while more than
``max_unacked_changes`` delivered changes (or ``max_unacked_bytes`` of their pgoutput messages) are not
durable yet.  Without the second one a catch-up
(a restart behind a large backlog) decodes the whole backlog into memory ahead of the consumers, and the
cyclic garbage collector's full collections over those objects cost more than the decoding itself (issue
6).  It only bounds a downstream that makes progress: when the durable position has not moved for
``unacked_stall_s`` (a shape holding transactions during a long snapshot, a consumer that cannot keep up)
the stream goes on as without it, so other shapes stay live and the collector's own limits apply.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

import psycopg
import pykka

from sync import runtime
from sync.postgres.backoff import Backoff
from sync.postgres.errors import classify
from sync.postgres.lsn import format_lsn
from sync.replication.acks import AckTracker
from sync.replication.changes import (
    RelationChanged,
    ReplicationEvent,
    SlotRecreated,
    TransactionFragment,
)
from sync.replication.pgoutput import DEFAULT_MAX_BATCH, PgOutputDecoder, RelationCache
from sync.replication.sink import Connected, Pending, ReplicationSink, ResumePoint
from sync.replication.status import ConnectionStatus
from sync.replication.stream import KEEPALIVE, ReplicationStream, StreamEnded

__all__ = ["ReaderConfig", "ReplicationReader", "Stopped"]

logger = logging.getLogger(__name__)

_YIELD_EVERY = 2000  # messages between cooperative yields / timer checks while data keeps coming
_GEVENT_YIELD_S = 0.0001
_SMALL_BURST = 64  # messages read since the last wait below which we coalesce wake-ups
_COALESCE_S = 0.001  # the pause that coalesces them (adds at most this to the latency)
_MAX_WAIT = 0.25  # longest socket wait, bounds stop latency and ack latency


class Stopped(Exception):
    """The owner asked the loop to stop."""


@dataclass(frozen=True, slots=True)
class ReaderConfig:
    dsn: str
    stream_id: str = "default"
    max_batch: int = DEFAULT_MAX_BATCH
    max_in_flight: int = 4
    # delivered, not yet durable (0 = unbounded; see the module docstring): large enough for a burst reaching
    # thousands of shapes to be routed as one batch (each shape then writes once for many transactions)
    max_unacked_changes: int = 100_000
    max_unacked_bytes: int = 16 * 1024 * 1024  # of pgoutput messages: bounds memory for wide rows
    unacked_stall_s: float = 1.0  # no durable progress for this long: stop holding the stream
    status_interval: float = 5.0  # capped at wal_sender_timeout / 3
    # nothing received for this long while listening: the connection is taken for dead (0: never); a reply is
    # asked for at half of it, so a live server is never silent that long (Postgres' wal_receiver_timeout)
    receive_timeout: float = 60.0
    connect_timeout: float = 30.0
    stable_after: float = 10.0  # streaming this long resets the restart backoff
    extra_options: str = ""  # extra ``-c name=value`` for the replication session (tests)

    @property
    def slot(self) -> str:
        return f"shapesync_slot_{self.stream_id}"

    @property
    def publication(self) -> str:
        return f"shapesync_pub_{self.stream_id}"


class ReplicationReader:
    """One incarnation's loop; :meth:`run` returns when stopped and raises on any failure."""

    def __init__(
        self,
        config: ReaderConfig,
        sink: ReplicationSink,
        *,
        cache: RelationCache,
        status: ConnectionStatus,
        backoff: Backoff,
        lock_acquired: runtime.Event,
        stop: runtime.Event,
    ) -> None:
        self.config = config
        self._sink = sink
        self._sink_deliver = sink.deliver
        self._sink_flushing = sink.flushing  # records a flush position before it is sent
        self._cache = cache
        self._status = status
        self._backoff = backoff
        self._lock_acquired = lock_acquired
        self._stop = stop
        self._stream: ReplicationStream | None = None
        self._in_flight: deque[Pending] = deque()
        self._interval = config.status_interval
        self._next_status = 0.0
        self._last_flush = 0
        self._stable_at = 0.0  # streaming since then without failure resets the backoff
        self._heard_at = 0.0  # when a message last came in (noted at each socket wait and yield)
        self._pinged = False  # a reply was asked for since then
        # the durability window: changes delivered, changes known durable, (commit LSN, delivered) marks
        self._delivered_changes = 0
        self._durable_changes = 0
        self._fed_bytes = 0  # pgoutput bytes decoded (what the delivered changes were made of)
        self._durable_bytes = 0
        self._commit_marks: deque[tuple[int, int, int]] = deque()  # (commit LSN, delivered, fed bytes)
        self._progress_at = 0.0  # when the durable position last moved (or streaming started)
        self._acked = runtime.Event()  # set by ack(): wakes a held stream
        self.tracker: AckTracker | None = None
        self.decoder: PgOutputDecoder | None = None

    # -- called from the actor thread ------------------------------------------------------------------
    def ack(self, commit_lsn: int) -> None:
        tracker = self.tracker
        if tracker is not None:
            tracker.on_ack(commit_lsn)
        self._acked.set()

    # -- the loop --------------------------------------------------------------------------------------
    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise Stopped

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise Stopped

    def run(self) -> None:
        self._sleep(self._backoff.delay())
        while not self._lock_acquired.wait(_MAX_WAIT):
            if self._stop.is_set():
                raise Stopped
        cfg = self.config
        stream = self._stream = ReplicationStream.open(
            cfg.dsn, timeout=cfg.connect_timeout, extra_options=cfg.extra_options
        )
        try:
            self._check_stop()  # each step may have taken long: an abandoned loop must not go on
            info = stream.identify_system()
            stream.check_wal_level()
            timeout = stream.wal_sender_timeout()
            if timeout > 0:
                self._interval = min(cfg.status_interval, timeout / 3)
            self._check_stop()
            reset = stream.ensure_publication(cfg.publication)
            slot = stream.ensure_slot(cfg.slot, reset=reset)
            self._sink.connected(Connected(info, slot))
            # A new slot starts a new history: what the downstream processed from the old one says
            # nothing about it (after a restore the LSNs may even go back), so nothing is skipped.
            resume = self._sink.resume_point() if slot.recreated is None else ResumePoint()
            self._check_stop()
            self.tracker = AckTracker(
                confirmed=slot.confirmed_flush_lsn, processed=resume.processed_lsn, durable=resume.durable_lsn
            )
            self.decoder = PgOutputDecoder(
                self._emit, max_batch=cfg.max_batch, cache=self._cache, skip_through=resume.processed_lsn
            )
            if slot.recreated is not None:
                self._deliver(SlotRecreated(cfg.slot, slot.recreated))
                self._drain_in_flight()
            stream.start(cfg.slot, cfg.publication, slot.confirmed_flush_lsn)
            logger.info(
                "streaming slot %s of system %s from %s (status every %.1f s, skip through %s)",
                cfg.slot,
                info.system_id,
                format_lsn(slot.confirmed_flush_lsn),
                self._interval,
                format_lsn(resume.processed_lsn),
            )
            self._status.set_state("active")
            self._pump(stream, self.decoder)
        finally:
            self._stream = None
            stream.close()

    def _pump(self, stream: ReplicationStream, decoder: PgOutputDecoder) -> None:
        pg = stream.pg
        get_copy_data = pg.get_copy_data
        feed_frame = decoder.feed_frame
        tracker = self.tracker
        assert tracker is not None
        fd = pg.socket
        self._stable_at = time.monotonic() + self.config.stable_after
        self._progress_at = self._heard_at = time.monotonic()
        count = 0
        drained = False
        # Under gevent, let the hub run a full loop iteration (timers included: sleep(0) only runs
        # ready callbacks) every _YIELD_EVERY messages; threads are preempted by the interpreter anyway.
        yield_s = _GEVENT_YIELD_S if runtime.gevent_active() else 0.0
        self._next_status = 0.0
        while True:
            n, data = get_copy_data(1)
            if n > 0:
                drained = False
                tag = data[0]
                if tag == 119:  # 'w' XLogData
                    self._fed_bytes += n
                    feed_frame(data.tobytes())
                elif tag == 107:  # 'k' keepalive
                    wal_end, _ts, reply = KEEPALIVE.unpack_from(data, 1)
                    tracker.on_keepalive(wal_end)
                    if reply:
                        self._send_status()
                count += 1
                if count >= _YIELD_EVERY:
                    count = 0
                    self._heard_at = time.monotonic()
                    decoder.behind = True  # _YIELD_EVERY messages without finding the connection empty
                    self._maintain()
                    if yield_s:
                        runtime.sleep(yield_s)
                continue
            if n < 0:
                raise stream.ended()
            if drained:
                # nothing buffered, nothing in the kernel either: housekeeping, then wait for the socket
                decoder.behind = False
                self._listened(count)
                self._poll_in_flight()
                self._maintain()
                if 0 < count < _SMALL_BURST:
                    # We outpace the server (small transactions trickling in): pause briefly so that the
                    # next wake-up finds many of them, instead of paying one wake-up per transaction.
                    runtime.sleep(_COALESCE_S)
                else:
                    runtime.wait_readable(fd, min(_MAX_WAIT, max(0.0, self._next_status - time.monotonic())))
                count = 0
            drained = True  # reset by the next message; a second empty read in a row waits
            try:
                pg.consume_input()
            except psycopg.OperationalError as exc:
                raise classify(exc) from exc

    def _maintain(self) -> None:
        """Stop check; timed status update (or a prompt one when the flush position moved); backoff reset
        once streaming has been stable for ``stable_after`` seconds."""
        if self._stop.is_set():
            self._send_status()
            raise Stopped
        now = time.monotonic()
        if self._stable_at and now >= self._stable_at:
            self._stable_at = 0.0
            self._backoff.succeeded()
        if now >= self._next_status:
            self._send_status()
        elif self.tracker is not None and self.decoder is not None:
            flush = self.tracker.flush_lsn(in_transaction=self.decoder.in_transaction)
            if flush > self._last_flush and now >= self._next_status - self._interval + 0.1:
                self._send_status()

    def _listened(self, count: int) -> None:
        """At a socket wait, ``count`` messages since the last one: note that the server was heard, or ask it
        for a reply after ``receive_timeout / 2`` of silence and give the connection up after all of it.  A
        network that drops packets without a reset (a partition, a NAT's expired entry) or a hung server
        leaves the socket open and silent: without this the shapes would stay silently stale until the
        kernel gives up retransmitting our status updates (~15 min)."""
        now = time.monotonic()
        if count:
            self._heard_at = now
            self._pinged = False
            return
        timeout = self.config.receive_timeout
        silent = now - self._heard_at
        if not timeout or silent < timeout / 2:
            return
        if silent >= timeout:
            raise StreamEnded(
                "connection_lost",
                f"nothing received from the server for {silent:.0f} s (replication.receive_timeout_s): "
                "the connection is taken for dead",
            )
        if not self._pinged:
            self._pinged = True
            self._send_status(reply=True)

    def _send_status(self, *, reply: bool = False) -> None:
        stream, tracker, decoder = self._stream, self.tracker, self.decoder
        if stream is None or not stream.streaming or tracker is None or decoder is None:
            return
        flush = tracker.flush_lsn(in_transaction=decoder.in_transaction)
        if flush > self._last_flush:
            self._sink_flushing(flush)
        stream.send_status(max(tracker.received, flush), flush, flush, reply=reply)
        self._last_flush = flush
        self._next_status = time.monotonic() + self._interval

    # -- delivery --------------------------------------------------------------------------------------
    def _emit(self, event: TransactionFragment | RelationChanged) -> None:
        """The decoder's output (hot path: once per fragment, i.e. per transaction when they are small)."""
        commit = False
        if event.__class__ is TransactionFragment:
            self._delivered_changes += len(event.changes)
            if event.commit:
                commit = True
                self._commit_marks.append((event.commit_lsn, self._delivered_changes, self._fed_bytes))
                tracker = self.tracker
                if tracker is not None:
                    tracker.on_delivered(event.commit_lsn, event.end_lsn or event.commit_lsn)
        pending = self._sink_deliver(event)
        if pending is not None:
            self._queue(pending)
        if commit and self._over_window():
            self._hold()

    def _settle(self) -> None:
        """Count the changes of the delivered transactions that became durable."""
        tracker = self.tracker
        marks = self._commit_marks
        if tracker is None or not marks or marks[0][0] > tracker.durable:
            return
        durable = tracker.durable
        while marks and marks[0][0] <= durable:
            _, self._durable_changes, self._durable_bytes = marks.popleft()
        self._progress_at = time.monotonic()

    def _over_window(self) -> bool:
        config = self.config
        changes, size = config.max_unacked_changes, config.max_unacked_bytes
        return bool(
            (changes and self._delivered_changes - self._durable_changes > changes)
            or (size and self._fed_bytes - self._durable_bytes > size)
        )

    def _hold(self) -> None:
        """At a transaction boundary: wait while the delivered changes that are not durable exceed the
        window (``max_unacked_changes`` / ``max_unacked_bytes``), unless the durable position has not
        moved for ``unacked_stall_s`` (module docstring).  Only between transactions: the commit of every
        delivered fragment is then delivered too, so the downstream can always make what it holds
        durable."""
        stall = self.config.unacked_stall_s
        while True:
            self._acked.clear()
            self._settle()
            if not self._over_window():
                return
            left = self._progress_at + stall - time.monotonic()
            if left <= 0:
                return  # a stuck downstream does not hold the stream (until it moves again)
            self._acked.wait(min(left, _MAX_WAIT, max(0.01, self._next_status - time.monotonic())))
            self._maintain()

    def _deliver(self, event: ReplicationEvent) -> None:
        pending = self._sink_deliver(event)
        if pending is not None:
            self._queue(pending)

    def _queue(self, pending: Pending) -> None:
        self._in_flight.append(pending)
        while len(self._in_flight) >= self.config.max_in_flight:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        """Wait for the oldest delivery while keeping the connection alive (status on the timer)."""
        pending = self._in_flight[0]
        while True:
            try:
                pending.get(timeout=max(0.01, min(_MAX_WAIT, self._next_status - time.monotonic())))
            except pykka.Timeout:
                self._maintain()
                continue
            self._in_flight.popleft()
            return

    def _drain_in_flight(self) -> None:
        while self._in_flight:
            self._wait_oldest()

    def _poll_in_flight(self) -> None:
        """Collect finished deliveries (and their failures) without waiting."""
        while self._in_flight:
            try:
                self._in_flight[0].get(timeout=0)
            except pykka.Timeout:
                return
            self._in_flight.popleft()

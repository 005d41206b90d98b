"""StreamLag: the stream is behind when a commit is routed well later after it committed than the quickest
ones, whatever the skew between Postgres's clock and ours."""

from __future__ import annotations

from sync.shapes.stream_lag import BEHIND_S, PG_EPOCH_S, StreamLag

NOW = 1_800_000_000.0


def commit_at(unix: float) -> int:
    return int((unix - PG_EPOCH_S) * 1e6)


def test_late_commits_are_behind_on_time_ones_are_not() -> None:
    lag = StreamLag()
    lag.note(commit_at(NOW - 0.002), NOW)
    assert not lag.behind
    lag.note(commit_at(NOW + 0.01 - 0.5), NOW + 0.01)  # committed half a second before it is routed
    assert lag.behind
    lag.note(commit_at(NOW + 0.02 - 0.003), NOW + 0.02)  # caught up
    assert not lag.behind


def test_a_constant_clock_skew_cancels_out() -> None:
    for skew in (-3600.0, 3600.0):  # Postgres's clock an hour behind or ahead of ours
        lag = StreamLag()
        lag.note(commit_at(NOW + skew - 0.002), NOW)
        lag.note(commit_at(NOW + skew + 0.01 - 0.004), NOW + 0.01)
        assert not lag.behind
        lag.note(commit_at(NOW + skew + 0.02 - 2 * BEHIND_S), NOW + 0.02)
        assert lag.behind


def test_a_clock_step_fades_out() -> None:
    lag = StreamLag()
    lag.note(commit_at(NOW), NOW)
    step = 0.5  # our clock jumps half a second ahead: every commit now looks late
    n = 0
    while True:
        n += 1
        lag.note(commit_at(NOW + n * 0.001), NOW + n * 0.001 + step)
        if not lag.behind:
            break
        assert n < 1000
    assert n > 100  # not forgotten at once: a real burst read late stays "behind" for a while

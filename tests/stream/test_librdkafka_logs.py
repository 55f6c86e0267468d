"""librdkafka's log lines through our logger: one line per kind per interval, not a flood."""

from __future__ import annotations

import logging

from stream.sources.confluent import RepeatFilter


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("streamdrift.librdkafka", logging.ERROR, __file__, 1,
                             "%s [%s] %s", ("FAIL", "streamdrift#consumer-1", msg), None)


def test_repeats_of_one_kind_are_held_back_and_counted() -> None:
    f = RepeatFilter(every_s=3600)
    # the same failure, differing only in numbers (ports, milliseconds), is one kind
    first = _record("127.0.0.1:39999/bootstrap: Connect failed (after 0ms in state CONNECT)")
    assert f.filter(first)
    assert not hasattr(first, "repeated")
    for ms in range(1, 50):
        assert not f.filter(_record(f"127.0.0.1:39999/bootstrap: Connect failed (after {ms}ms "
                                    f"in state CONNECT)"))
    # another kind passes at once
    assert f.filter(_record("Consumer group session timed out"))


def test_the_next_line_after_the_interval_says_how_many_were_held() -> None:
    f = RepeatFilter(every_s=0.0)
    assert f.filter(_record("Connect failed"))
    f.every_s = 3600
    assert not f.filter(_record("Connect failed"))
    assert not f.filter(_record("Connect failed"))
    f.every_s = 0.0
    r = _record("Connect failed")
    assert f.filter(r)
    assert r.repeated == 2  # type: ignore[attr-defined]

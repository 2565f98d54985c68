"""The Docker driver's reading of a log stream (``timestamps=1``, multiplexed), with no Engine:
frames cut anywhere by the network, the logger's 16 KiB pieces joined, bounds kept."""

from __future__ import annotations

import pytest

from mariposa.drivers.base import MAX_LOG_LINE, DriverError, LogLine
from mariposa.drivers.docker import _docker_time, _LogLines

T0 = "2023-11-14T22:13:20.000000000Z"  # 1700000000.0


def frame(text: bytes, stream: int = 1, stamp: str = T0) -> bytes:
    payload = stamp.encode() + b" " + text
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def test_times_are_epoch_seconds_to_the_microsecond():
    assert _docker_time(b"2023-11-14T22:13:20.123456789Z") == pytest.approx(1700000000.123456, abs=1e-6)
    assert _docker_time(b"2023-11-14T22:13:20Z") == 1700000000.0
    with pytest.raises(DriverError, match="unreadable time"):
        _docker_time(b"yesterday")


def test_frames_cut_anywhere_give_the_same_lines():
    data = b"".join([frame(b"one\n"), frame(b"err\n", stream=2, stamp="2023-11-14T22:13:21.5Z"),
                     frame(b"two\n", stamp="2023-11-14T22:13:22.000001000Z")])
    expected = [LogLine(1700000000.0, b"one"), LogLine(1700000001.5, b"err"), LogLine(1700000002.000001, b"two")]
    for size in (1, 3, 7, 8, 9, 50, len(data)):
        reader, got = _LogLines(), []
        for i in range(0, len(data), size):
            got += reader.feed(data[i:i + size])
        assert got == expected and reader.rest() == [], size


def test_the_loggers_pieces_are_joined_per_stream_and_bounded():
    reader = _LogLines()
    got = reader.feed(frame(b"a" * 10) + frame(b"x\n", stream=2) + frame(b"b" * 10 + b"\n"))
    assert got == [LogLine(1700000000.0, b"x"), LogLine(1700000000.0, b"a" * 10 + b"b" * 10)]
    huge = reader.feed(frame(b"y" * (MAX_LOG_LINE + 5)))
    assert huge == [LogLine(1700000000.0, b"y" * MAX_LOG_LINE)]  # cut at the bound, the rest held
    assert reader.rest() == [LogLine(1700000000.0, b"y" * 5)]  # a last line without a newline
    assert reader.feed(frame(b"one\ntwo\n")) == [LogLine(1700000000.0, b"one"), LogLine(1700000000.0, b"two")]
    assert reader.feed(frame(b"\n")) == [LogLine(1700000000.0, b"")]  # an empty line is a line

"""Day files: raw and gzip round trips, gzip detected by content, frame walking and truncated tails."""

import gzip

import numpy as np
import pytest

from appliance.feed import itch_descriptor as d
from appliance.feed.dayfile import (
    count_types, index_frames, is_gzip, iter_messages, read_dayfile, type_counts, walk_frames, write_dayfile,
)


def frames(*messages: bytes) -> np.ndarray:
    raw = b"".join(len(m).to_bytes(2, "big") + m for m in messages)
    return np.frombuffer(raw, dtype=np.uint8).copy()


MESSAGES = [
    d.encode("S", timestamp=1, event_code="O"),
    d.encode("A", locate=1, timestamp=2, ref=7, side="B", shares=100, stock="ABCD", price=1_000_000),
    d.encode("E", locate=1, timestamp=3, ref=7, shares=40, match=1),
    d.encode("D", locate=1, timestamp=4, ref=7),
    d.encode("S", timestamp=5, event_code="C"),
]


@pytest.fixture
def day():
    return frames(*MESSAGES)


@pytest.mark.parametrize("name,compress", [("day.itch", None), ("day.itch.gz", None), ("day.itch", True),
                                           ("day.gz", False)])
def test_round_trip(tmp_path, day, name, compress):
    path = tmp_path / name
    assert write_dayfile(path, day, compress=compress) == day.size
    zipped = compress if compress is not None else name.endswith(".gz")
    assert is_gzip(path) == zipped
    back = read_dayfile(path)
    assert back.dtype == np.uint8 and back.flags.writeable
    assert np.array_equal(back, day)


def test_gzip_detected_by_magic_not_name(tmp_path, day):
    path = tmp_path / "plain-looking-name.itch"
    path.write_bytes(gzip.compress(day.tobytes()))
    assert np.array_equal(read_dayfile(path), day)


def test_gzip_larger_than_the_size_hint(tmp_path):
    # Two gzip members: the trailer's size hint covers only the last, so the reader must grow its buffer.
    big = np.arange(3 << 20, dtype=np.uint32).view(np.uint8)
    path = tmp_path / "two-members.gz"
    path.write_bytes(gzip.compress(big.tobytes(), 1) + gzip.compress(b"tail", 1))
    back = read_dayfile(path)
    assert back.size == big.size + 4 and np.array_equal(back[:big.size], big) and back[big.size:].tobytes() == b"tail"


def test_walk_frames_counts_equal_iter_messages(day):
    n, nxt, bad = walk_frames(day, 0, day.size)
    assert (n, nxt, bad) == (len(MESSAGES), day.size, -1)
    assert [bytes(m) for m in iter_messages(day)] == MESSAGES
    # Starting mid-file, from a frame boundary.
    second = 2 + len(MESSAGES[0])
    assert walk_frames(day, second, day.size) == (len(MESSAGES) - 1, day.size, -1)


@pytest.mark.parametrize("cut", [1, 2, 3, 10])
def test_truncated_tail_is_found(day, cut):
    short = day[: day.size - cut]
    last = day.size - 2 - len(MESSAGES[-1])
    n, nxt, bad = walk_frames(short, 0, short.size)
    assert (n, nxt, bad) == (len(MESSAGES) - 1, last, last)
    with pytest.raises(ValueError, match=f"truncated frame at offset {last}"):
        list(iter_messages(short))
    assert len(list(iter_messages(short, strict=False))) == len(MESSAGES) - 1


def test_lone_length_byte_is_a_truncated_tail(day):
    short = np.concatenate([day, np.array([0], dtype=np.uint8)])
    assert walk_frames(short, 0, short.size) == (len(MESSAGES), day.size, day.size)


def test_index_frames_records_message_starts_up_to_capacity(day):
    offsets = np.zeros(3, dtype=np.int64)
    n, nxt = index_frames(day, 0, day.size, offsets)
    assert n == 3
    for i in range(3):
        ln = (day[offsets[i] - 2] << 8) | day[offsets[i] - 1]
        assert day[offsets[i]:offsets[i] + ln].tobytes() == MESSAGES[i]
    rest = np.zeros(8, dtype=np.int64)
    assert index_frames(day, nxt, day.size, rest) == (2, day.size)
    assert day[rest[1]:rest[1] + len(MESSAGES[4])].tobytes() == MESSAGES[4]


def test_type_counts(day):
    assert type_counts(day) == {"S": 2, "A": 1, "E": 1, "D": 1}
    counts = np.zeros(256, dtype=np.int64)
    with_empty = np.concatenate([day, frames(b"")])
    assert count_types(with_empty, 0, with_empty.size, counts) == len(MESSAGES) + 1
    assert counts[0] == 1 and counts[ord("S")] == 2


def test_empty_file(tmp_path):
    path = tmp_path / "empty.itch"
    path.write_bytes(b"")
    buf = read_dayfile(path)
    assert buf.size == 0
    assert walk_frames(buf, 0, 0) == (0, 0, -1)
    assert list(iter_messages(buf)) == []

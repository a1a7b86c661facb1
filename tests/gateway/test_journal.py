"""Order journal: records through a ring into the file and back, crash repair, fsync policies, I/O faults,
and a writer process SIGKILLed mid-stream."""

import errno
import inspect
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest

from appliance.gateway import journal as jn
from appliance.gateway.journal import (
    HEADER_SIZE, K_NOTE, K_RECEIVED, K_SENT, K_SESSION, MAGIC, REC_MAX_PAYLOAD, REC_SIZE, JournalWriter, Record,
    journal_put, open_for_append, read_journal, repair,
)
from appliance.runtime.layout import RING_HDR_WORDS
from appliance.runtime.ring import ring_available, ring_free, ring_head, ring_publish, ring_tail
from tests.support import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_ring(n: int = 64):
    return np.zeros(RING_HDR_WORDS, np.int64), np.zeros((n, REC_SIZE), np.uint8)


def publish(hdr, slots, records, timeout: float = 10.0) -> None:
    """Put (kind, seq, stamp, payload) tuples in the ring in order, waiting (bounded) for room."""
    cap, i = slots.shape[0], 0
    while i < len(records):
        free = wait_for(lambda: ring_free(hdr, cap), timeout, interval=0.001, what="room in the journal ring")
        pos, k = ring_tail(hdr), min(free, len(records) - i)
        for j in range(k):
            kind, seq, stamp, payload = records[i + j]
            assert journal_put(slots, pos + j, kind, seq, stamp, np.frombuffer(payload, np.uint8).copy(), 0,
                               len(payload))
        ring_publish(hdr, k)
        i += k


def numbered(first: int, count: int):
    return [(K_RECEIVED, i, 1000 + i, b"msg %d" % i) for i in range(first, first + count)]


@pytest.fixture
def writers():
    """Make JournalWriters; every one still open at the end of the test is stopped."""
    made = []

    def make(path, hdr, slots, **kw):
        w = JournalWriter(path, hdr, slots, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop()


# ---- round trip ----------------------------------------------------------------------------------
def test_each_kind_round_trips_and_the_file_matches_the_layout(tmp_path, writers):
    path = tmp_path / "j"
    hdr, slots = make_ring(8)
    slots[:] = 0xAA  # stale bytes from earlier use of the slots must not reach the file
    recs = [
        (K_SENT, 0, 123456789, b"O" + bytes(range(1, 47))),
        (K_RECEIVED, 2**63 - 1, -5, b"A" * 64),
        (K_SESSION, 17, 7, b"SESS000001"),
        (K_NOTE, 0, 0, b"logged in after restart"),
        (K_NOTE, 0, 0, b""),
        (K_RECEIVED, 18, 8, bytes(range(REC_MAX_PAYLOAD))),
    ]
    publish(hdr, slots, recs)
    w = writers(path, hdr, slots, text="gateway A")
    assert w.drain() == len(recs)
    w.stop()

    got, report = read_journal(path)
    assert got == [Record(*r) for r in recs]
    assert report["records"] == len(recs) and report["bad_crc"] == 0
    assert report["torn_tail_bytes"] == 0 and report["truncated_to"] is None
    assert report["version"] == 1 and report["text"] == "gateway A"
    assert abs(report["created_ns"] - time.time_ns()) < 60e9

    raw = path.read_bytes()
    assert raw[:8] == MAGIC and len(raw) == HEADER_SIZE + len(recs) * REC_SIZE
    for i, (kind, seq, stamp, payload) in enumerate(recs):
        r = raw[HEADER_SIZE + i * REC_SIZE:HEADER_SIZE + (i + 1) * REC_SIZE]
        n = len(payload)
        assert (r[0], r[1], r[2:4]) == (kind, n, b"\0\0")
        assert int.from_bytes(r[4:8], "little") == zlib.crc32(r[0:4] + r[8:24 + n])
        assert int.from_bytes(r[8:16], "big") == seq and int.from_bytes(r[16:24], "big", signed=True) == stamp
        assert r[24:24 + n] == payload and not any(r[24 + n:])


def test_record_crc_is_zlib_crc32_over_the_covered_bytes():
    rng = np.random.default_rng(3)
    recs = rng.integers(0, 256, (200, REC_SIZE), dtype=np.uint8)
    recs[:, 1] = rng.integers(0, REC_MAX_PAYLOAD + 1, 200)
    for r in recs:
        n = int(r[1])
        assert jn.record_crc(r, 0, jn.CRC_TABLE) == zlib.crc32(r[0:4].tobytes() + r[8:24 + n].tobytes())


def test_journal_put_refuses_bad_kind_or_length_and_leaves_the_slot_alone():
    hdr, slots = make_ring(4)
    src = np.zeros(200, np.uint8)
    for kind, length in ((0, 4), (5, 4), (K_SENT, REC_MAX_PAYLOAD + 1), (K_SENT, -1)):
        assert not journal_put(slots, 1, kind, 1, 1, src, 0, length)
    assert not slots.any()


def test_malformed_slots_are_counted_skipped_and_released(tmp_path, writers):
    hdr, slots = make_ring(8)
    publish(hdr, slots, numbered(0, 2))
    pos = ring_tail(hdr)
    slots[pos & 7, :2] = (9, 4)                     # no such kind
    slots[(pos + 1) & 7, :2] = (K_SENT, 200)        # longer than a record holds
    ring_publish(hdr, 2)
    publish(hdr, slots, numbered(2, 2))
    w = writers(tmp_path / "j", hdr, slots)
    assert w.drain() == 4
    assert w.skipped == {"kind": 1, "length": 1}
    assert ring_available(hdr) == 0
    w.stop()
    got, report = read_journal(tmp_path / "j")
    assert [r.seq for r in got] == [0, 1, 2, 3] and report["bad_crc"] == 0


# ---- ordering under a running writer ----------------------------------------------------------------
def test_order_is_kept_across_many_wraps_with_the_writer_thread_running(tmp_path, writers):
    hdr, slots = make_ring(64)
    w = writers(tmp_path / "j", hdr, slots, poll_us=100)
    w.start()
    assert any(t.name == "journal" and t.daemon for t in threading.enumerate())
    count = 3000  # the ring wraps about 47 times
    recs = [(K_SENT if i % 3 else K_RECEIVED, i, i * 7, b"%d" % i * (i % 9 + 1)) for i in range(count)]
    publish(hdr, slots, recs, timeout=20.0)
    assert w.flush(timeout=20.0)
    assert (w.records_written, w.bytes_written, ring_available(hdr)) == (count, count * REC_SIZE, 0)
    w.stop()
    got, report = read_journal(tmp_path / "j")
    assert got == [Record(*r) for r in recs]
    assert report["bad_crc"] == 0 and report["torn_tail_bytes"] == 0
    assert w.last_error is None


# ---- crash repair ----------------------------------------------------------------------------------
def write_journal(path, records, writers) -> None:
    hdr, slots = make_ring(64)
    w = writers(path, hdr, slots)
    publish(hdr, slots, records)
    w.stop()
    assert w.records_written == len(records)


def test_a_record_cut_mid_way_is_repaired_on_open_and_appends_continue(tmp_path, writers):
    path = tmp_path / "j"
    write_journal(path, numbered(0, 10), writers)
    good = HEADER_SIZE + 9 * REC_SIZE
    os.truncate(path, good + 50)

    got, report = read_journal(path)
    assert [r.seq for r in got] == list(range(9))
    assert (report["torn_tail_bytes"], report["truncated_to"], report["bad_crc"]) == (50, good, 0)

    hdr, slots = make_ring(8)
    w = writers(path, hdr, slots)
    assert (w.repair_report["torn_tail_bytes"], w.repair_report["truncated_to"]) == (50, good)
    assert os.path.getsize(path) == good
    publish(hdr, slots, numbered(10, 5))
    w.stop()
    got, report = read_journal(path)
    assert [r.seq for r in got] == list(range(9)) + list(range(10, 15))
    assert (report["torn_tail_bytes"], report["bad_crc"], report["truncated_to"]) == (0, 0, None)


def test_garbage_after_the_last_record_is_a_torn_tail_that_repair_cuts(tmp_path, writers):
    path = tmp_path / "j"
    write_journal(path, numbered(0, 10), writers)
    good = HEADER_SIZE + 10 * REC_SIZE
    with open(path, "ab") as f:  # whole records that never reached the disk, then a partial one
        f.write(bytes(REC_SIZE) + random.Random(7).randbytes(300))

    _, report = read_journal(path)
    assert (report["records"], report["bad_crc"]) == (10, 0)
    assert (report["torn_tail_bytes"], report["truncated_to"]) == (REC_SIZE + 300, good)
    assert repair(path) == report
    assert os.path.getsize(path) == good
    assert repair(path)["truncated_to"] is None  # nothing left to cut

    hdr, slots = make_ring(8)
    w = writers(path, hdr, slots)
    assert w.repair_report["torn_tail_bytes"] == 0
    publish(hdr, slots, numbered(10, 3))
    w.stop()
    got, report = read_journal(path)
    assert [r.seq for r in got] == list(range(13))
    assert (report["torn_tail_bytes"], report["bad_crc"]) == (0, 0)


@pytest.mark.parametrize("scan_records", [4, jn.SCAN_RECORDS])  # 4: the bad records straddle two read steps
def test_a_corrupted_middle_record_is_counted_as_bad_crc_and_skipped_not_cut(tmp_path, writers, monkeypatch,
                                                                            scan_records):
    monkeypatch.setattr(jn, "SCAN_RECORDS", scan_records)
    path = tmp_path / "j"
    write_journal(path, numbered(0, 10), writers)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(HEADER_SIZE + 3 * REC_SIZE + 26)  # a payload byte of record 3
        f.write(b"X")
        f.seek(HEADER_SIZE + 4 * REC_SIZE + 4)   # the CRC of record 4
        f.write(b"\xff")
        f.seek(HEADER_SIZE + 6 * REC_SIZE)       # the kind of record 6
        f.write(b"\x07")

    got, report = read_journal(path)
    assert [r.seq for r in got] == [0, 1, 2, 5, 7, 8, 9]
    assert (report["records"], report["bad_crc"], report["torn_tail_bytes"], report["truncated_to"]) == (7, 3, 0, None)
    assert repair(path)["bad_crc"] == 3 and os.path.getsize(path) == size
    hdr, slots = make_ring(8)
    w = writers(path, hdr, slots)
    assert w.repair_report["truncated_to"] is None and os.path.getsize(path) == size


@pytest.mark.parametrize("scan_records", [4, jn.SCAN_RECORDS])
def test_failed_last_records_count_as_torn_tail(tmp_path, writers, monkeypatch, scan_records):
    # After the last good record a crash and a flipped bit look the same; the crash is the likely one.
    monkeypatch.setattr(jn, "SCAN_RECORDS", scan_records)
    path = tmp_path / "j"
    write_journal(path, numbered(0, 10), writers)
    with open(path, "r+b") as f:
        for i in (2, 7, 8, 9):
            f.seek(HEADER_SIZE + i * REC_SIZE + 25)  # a payload byte
            f.write(b"\x01")
        f.seek(0, os.SEEK_END)
        f.write(b"\x02" * 40)
    got, report = read_journal(path)
    assert [r.seq for r in got] == [0, 1, 3, 4, 5, 6]
    assert (report["bad_crc"], report["torn_tail_bytes"]) == (1, 3 * REC_SIZE + 40)
    assert report["truncated_to"] == HEADER_SIZE + 7 * REC_SIZE


# ---- durability policies and release order ----------------------------------------------------------
def test_always_syncs_once_per_drain_that_wrote_and_before_releasing(tmp_path, writers, monkeypatch):
    hdr, slots = make_ring(16)
    w = writers(tmp_path / "j", hdr, slots, fsync="always")
    heads_at_sync = []

    def fdatasync(fd):
        heads_at_sync.append(ring_head(hdr))
        os.fdatasync(fd)

    monkeypatch.setattr(jn, "_fdatasync", fdatasync)
    for first, count in ((0, 3), (3, 2), (5, 1)):
        head = ring_head(hdr)
        publish(hdr, slots, numbered(first, count))
        assert w.drain() == count
        assert heads_at_sync[-1] == head  # synced while the slots were still held
    assert w.drain() == 0
    assert w.fsyncs == 3 and len(heads_at_sync) == 3


def test_none_never_syncs(tmp_path, writers):
    hdr, slots = make_ring(16)
    w = writers(tmp_path / "j", hdr, slots, fsync="none")
    w.start()
    publish(hdr, slots, numbered(0, 100))
    assert w.flush(timeout=10.0)
    w.stop()
    assert (w.records_written, w.fsyncs) == (100, 0)


def test_interval_syncs_on_its_own_after_the_interval_and_on_flush(tmp_path, writers):
    hdr, slots = make_ring(16)
    lazy = writers(tmp_path / "lazy", hdr, slots, fsync="interval", interval_ms=600_000)
    publish(hdr, slots, numbered(0, 5))
    assert lazy.drain() == 5 and lazy.fsyncs == 0
    assert lazy.flush() and lazy.fsyncs == 1
    assert lazy.flush() and lazy.fsyncs == 1  # nothing new to sync
    lazy.stop()

    hdr, slots = make_ring(16)
    w = writers(tmp_path / "j", hdr, slots, fsync="interval", interval_ms=20)
    w.start()
    publish(hdr, slots, numbered(0, 5))
    wait_for(lambda: w.fsyncs >= 1, 10.0, what="the interval sync")
    assert w.records_written == 5


def test_bad_arguments_are_refused_with_what_was_expected(tmp_path):
    hdr, slots = make_ring(8)
    with pytest.raises(ValueError, match="fsync policy 'sometimes'"):
        JournalWriter(tmp_path / "j", hdr, slots, fsync="sometimes")
    with pytest.raises(ValueError, match="power of two"):
        JournalWriter(tmp_path / "j", hdr, np.zeros((6, REC_SIZE), np.uint8))
    with pytest.raises(ValueError, match="int64"):
        JournalWriter(tmp_path / "j", np.zeros(RING_HDR_WORDS, np.int32), slots)
    with pytest.raises(ValueError, match=f"{RING_HDR_WORDS} words"):  # the ring would write past a short one
        JournalWriter(tmp_path / "j", np.zeros(RING_HDR_WORDS // 2, np.int64), slots)
    assert not (tmp_path / "j").exists()


# ---- flush, stop and I/O faults ---------------------------------------------------------------------
def test_flush_writes_everything_published_before_it_without_the_thread(tmp_path, writers):
    hdr, slots = make_ring(16)
    w = writers(tmp_path / "j", hdr, slots)
    publish(hdr, slots, numbered(0, 10))
    assert w.flush(timeout=5.0)
    assert w.records_written == 10 and ring_available(hdr) == 0 and w.fsyncs == 1
    assert w.flush(timeout=0.0)  # nothing to do: true at once
    w.stop()
    assert not w.flush()         # closed
    assert len(read_journal(tmp_path / "j")[0]) == 10


def test_stop_drains_what_is_left_syncs_and_closes(tmp_path, writers):
    hdr, slots = make_ring(16)
    w = writers(tmp_path / "j", hdr, slots)
    publish(hdr, slots, numbered(0, 7))
    w.stop()
    assert (w.records_written, w.fsyncs, ring_available(hdr)) == (7, 1, 0)
    w.stop()  # a second stop does nothing
    publish(hdr, slots, numbered(7, 1))
    assert w.drain() == 0
    with pytest.raises(RuntimeError, match="already started or stopped"):
        w.start()
    assert [r.seq for r in read_journal(tmp_path / "j")[0]] == list(range(7))


def test_a_failing_write_keeps_the_records_in_the_ring_until_it_succeeds(tmp_path, writers, monkeypatch):
    hdr, slots = make_ring(16)
    w = writers(tmp_path / "j", hdr, slots)
    publish(hdr, slots, numbered(0, 10))

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jn, "_write", full)
    assert w.drain() == 0
    assert not w.flush(timeout=0.1)
    assert "No space left" in w.last_error and str(tmp_path / "j") in w.last_error
    assert ring_head(hdr) == 0 and w.records_written == 0

    monkeypatch.setattr(jn, "_write", os.write)
    assert w.flush(timeout=5.0)
    w.stop()
    assert [r.seq for r in read_journal(tmp_path / "j")[0]] == list(range(10))


def test_a_partial_write_resumes_where_it_stopped(tmp_path, writers, monkeypatch):
    hdr, slots = make_ring(16)
    w = writers(tmp_path / "j", hdr, slots)
    publish(hdr, slots, numbered(0, 6))
    calls = []

    def short_then_fail(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return os.write(fd, bytes(data[:100]))
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(jn, "_write", short_then_fail)
    assert w.drain() == 0 and ring_head(hdr) == 0
    monkeypatch.setattr(jn, "_write", os.write)
    publish(hdr, slots, numbered(6, 2))  # behind the interrupted batch, so written after it
    assert w.flush(timeout=5.0)
    assert calls == [6 * REC_SIZE, 6 * REC_SIZE - 100]
    w.stop()
    got, report = read_journal(tmp_path / "j")
    assert [r.seq for r in got] == list(range(8)) and report["bad_crc"] == report["torn_tail_bytes"] == 0


def test_a_failed_sync_stops_releasing_for_good(tmp_path, writers, monkeypatch):
    hdr, slots = make_ring(16)
    w = writers(tmp_path / "j", hdr, slots, fsync="always")

    def broken(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(jn, "_fdatasync", broken)
    publish(hdr, slots, numbered(0, 3))
    assert w.drain() == 0
    assert w.failed and "fdatasync" in w.last_error and ring_head(hdr) == 0
    monkeypatch.setattr(jn, "_fdatasync", os.fdatasync)
    assert w.drain() == 0 and not w.flush(timeout=0.1) and ring_head(hdr) == 0


# ---- header and single writer -----------------------------------------------------------------------
def test_a_file_that_is_not_a_journal_is_refused_naming_it(tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_bytes(b"NOTAJRNL" + bytes(HEADER_SIZE - 8))
    for call in (open_for_append, read_journal, repair):
        with pytest.raises(ValueError, match=f"{wrong}: not an order journal \\(magic b'NOTAJRNL'"):
            call(wrong)
    short = tmp_path / "short"
    short.write_bytes(b"hello\n")
    with pytest.raises(ValueError, match=f"{short}: not an order journal \\(6 bytes, shorter than"):
        open_for_append(short)
    future = tmp_path / "future"
    future.write_bytes(MAGIC + (2).to_bytes(4, "big") + REC_SIZE.to_bytes(4, "big") + bytes(HEADER_SIZE - 16))
    with pytest.raises(ValueError, match=f"{future}: journal version 2"):
        read_journal(future)
    assert wrong.read_bytes()[:8] == b"NOTAJRNL" and short.read_bytes() == b"hello\n"


@pytest.mark.parametrize("torn", [MAGIC[:5], bytes(20)])
def test_a_header_torn_at_creation_is_rewritten(tmp_path, torn, writers):
    path = tmp_path / "j"
    path.write_bytes(torn)
    assert read_journal(path) == ([], {"records": 0, "torn_tail_bytes": len(torn), "bad_crc": 0, "truncated_to": 0})
    hdr, slots = make_ring(8)
    w = writers(path, hdr, slots)
    assert w.repair_report["torn_tail_bytes"] == len(torn)
    publish(hdr, slots, numbered(0, 1))
    w.stop()
    assert [r.seq for r in read_journal(path)[0]] == [0]


def test_header_text_longer_than_its_field_is_refused(tmp_path):
    with pytest.raises(ValueError, match="more than 40"):
        open_for_append(tmp_path / "j", text="x" * 41)


def test_only_one_writer_at_a_time(tmp_path, writers):
    path = tmp_path / "j"
    hdr, slots = make_ring(8)
    w = writers(path, hdr, slots)
    with pytest.raises(RuntimeError, match="open for writing by another writer"):
        JournalWriter(path, *make_ring(8))
    with pytest.raises(RuntimeError, match="another writer"):
        repair(path)
    w.stop()
    assert repair(path)["truncated_to"] is None


def test_the_writer_thread_is_named_journal(tmp_path, writers):
    hdr, slots = make_ring(8)
    w = writers(tmp_path / "j", hdr, slots)
    w.start()

    def named():
        names = set()
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    names.add(f.read().strip())
            except FileNotFoundError:  # a thread that ended while we looked
                pass
        return "journal" in names

    wait_for(named, 5.0, what="a thread named journal in /proc/self/task")


# ---- a writer process killed mid-stream -------------------------------------------------------------
def payload_of(i: int) -> bytes:
    """Payload of record i in the crash test, 4 to 104 bytes (the child runs a copy of this function)."""
    return (i * 2654435761 % 2**32).to_bytes(4, "big") * (i % 26 + 1)


CHILD = """
import sys, time
from appliance.runtime import cache
cache.configure()
import numpy as np
from appliance.gateway.journal import JournalWriter, K_RECEIVED, journal_put
from appliance.runtime.layout import RING_HDR_WORDS
from appliance.runtime.ring import ring_free, ring_publish, ring_tail
hdr, slots = np.zeros(RING_HDR_WORDS, np.int64), np.zeros((64, 128), np.uint8)
w = JournalWriter(sys.argv[1], hdr, slots, fsync="interval", interval_ms=5)
w.start()
i, deadline = 0, time.monotonic() + 60
while i < 2_000_000 and time.monotonic() < deadline:
    free = ring_free(hdr, 64)
    if free == 0:
        time.sleep(0.0001)
        continue
    pos = ring_tail(hdr)
    for j in range(free):
        p = np.frombuffer(payload_of(i + j), np.uint8).copy()
        journal_put(slots, pos + j, K_RECEIVED, i + j, -(i + j), p, 0, len(p))
    ring_publish(hdr, free)
    i += free
"""


def test_a_sigkilled_writer_leaves_a_readable_prefix_of_what_was_published(tmp_path, cache_dir, writers):
    path = tmp_path / "j"
    script = tmp_path / "child.py"
    script.write_text(inspect.getsource(payload_of) + CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(path)], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, APPLIANCE_CACHE_DIR=cache_dir, PYTHONPATH=ROOT))
    try:
        def grown():
            if proc.poll() is not None:
                pytest.fail(f"writer child exited with {proc.returncode}:\n{proc.stderr.read()}")
            return path.exists() and os.path.getsize(path) >= HEADER_SIZE + 3000 * REC_SIZE

        wait_for(grown, 120.0, what="the child's journal to pass 3000 records")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    got, report = read_journal(path)
    assert report["bad_crc"] == 0 and len(got) >= 3000
    assert got == [Record(K_RECEIVED, i, -i, payload_of(i)) for i in range(len(got))]

    hdr, slots = make_ring(8)  # the restart: repair, then append after the prefix
    w = writers(path, hdr, slots)
    assert w.repair_report["torn_tail_bytes"] == report["torn_tail_bytes"]
    publish(hdr, slots, [(K_SESSION, len(got), 0, b"SESS000002")])
    w.stop()
    again, report = read_journal(path)
    assert again == got + [Record(K_SESSION, len(got), 0, b"SESS000002")]
    assert (report["bad_crc"], report["torn_tail_bytes"]) == (0, 0)

"""The order journal: fixed 128-byte records the gateway puts in a ring, a writer thread that appends them
to a file, and a reader that rebuilds the day from that file after a crash.

The gateway hot thread fills a ring slot with `journal_put` and publishes it; `JournalWriter` (off the
hot path) seals each record with a CRC (zlib's CRC-32, computed by a numba loop that runs without the
GIL), appends it with os.write on an O_APPEND descriptor and only then releases the slot. The writer is
the file's only writer: every record, SESSION and NOTE included, goes through the ring.

File: a 64-byte header, then whole records. Integers are big-endian like every other format here
(the hot side writes them with wire.put_*), except the CRC, which is stored little-endian.
```
 header
 0                 8          12         16                    24                                     64
 +-----------------+----------+----------+---------------------+--------------------------------------+
 | magic APPJRNL1  | version  | rec size | created: ns since   | text: ASCII, NUL-padded (40 bytes)   |
 |                 | u32 (=1) | u32      | the epoch (u64)     |                                      |
 +-----------------+----------+----------+---------------------+--------------------------------------+

 record
 0      1      2             4                    8
 +------+------+-------------+--------------------+
 | kind | len  |  reserved   |  crc32 (writer)    |   crc32 over [0:4] + [8:24+len], little-endian u32
 +------+------+-------------+--------------------+
 |  seq: SoupBinTCP sequence number (received) or 0 (sent)   |  8   u64
 +-----------------------------------------------------------+
 |  tsc / stamp: hot-side timestamp (int64)                  | 16   i64
 +-----------------------------------------------------------+
 |  payload: the raw OUCH message, len bytes (<= 104)        | 24 .. 128   (zero after len in the file)
 +-----------------------------------------------------------+
```
Kinds: SENT (an OUCH inbound message the gateway sent), RECEIVED (a sequenced OUCH outbound message,
seq = its SoupBinTCP number), SESSION (payload = the 10-byte session id, seq = the first sequence number
of a login), NOTE (free ASCII text).

Crash repair: records are appended whole, so after a crash only the end of the file can be damaged: a
partial last record, or whole records that never reached the disk (zeros or stale bytes after a power
loss). `repair` cuts that tail; a record that fails its check with good records after it is corruption,
not a crash, and `read_journal` counts it in "bad_crc" and skips it.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
from collections import namedtuple

import numpy as np
from numba import njit

from appliance.runtime.layout import RING_HDR_WORDS
from appliance.runtime.libc import set_thread_name
from appliance.runtime.ring import ring_available, ring_head, ring_release
from appliance.runtime.wire import put_u16, put_u32, put_u64

# ---- record ------------------------------------------------------------------------------------
REC_SIZE = 128
REC_KIND = 0
REC_LEN = 1
REC_RESERVED = 2
REC_CRC = 4
REC_SEQ = 8
REC_STAMP = 16
REC_PAYLOAD = 24
REC_MAX_PAYLOAD = REC_SIZE - REC_PAYLOAD  # 104

K_SENT = 1
K_RECEIVED = 2
K_SESSION = 3
K_NOTE = 4
KIND_NAMES = {K_SENT: "sent", K_RECEIVED: "received", K_SESSION: "session", K_NOTE: "note"}

SESSION_ID_WIDTH = 10  # a SESSION record's payload: the SoupBinTCP session id, as Login Accepted carries it

# ---- file header -------------------------------------------------------------------------------
MAGIC = b"APPJRNL1"
VERSION = 1
HDR_MAGIC = 0
HDR_VERSION = 8
HDR_REC_SIZE = 12
HDR_CREATED = 16
HDR_TEXT = 24
HEADER_SIZE = 64
HDR_TEXT_WIDTH = HEADER_SIZE - HDR_TEXT  # 40

_HEADER = struct.Struct(">8sIIQ40s")

# ---- durability --------------------------------------------------------------------------------
# Records still in the ring when the process dies are lost under every policy (the ring's depth bounds
# them); the policies differ in what happens to records the writer has already released:
#   none      written to the OS page cache, never synced: they survive a crash of the process (SIGKILL
#             included) but not a power loss or a kernel crash.
#   interval  synced at most interval_ms after being written: a power loss loses at most the last
#             interval_ms of records (plus the time one sync takes).
#   always    synced before their slots are released: nothing the writer released is ever lost.
FSYNC_POLICIES = ("none", "interval", "always")

MAX_BATCH = 256           # records per os.write: 32 KiB, bounds the writer's copy of the ring
SCAN_RECORDS = 8192       # records the reader reads and checks per step: 1 MiB
ERROR_BACKOFF_S = 0.01    # pause of the writer thread after a failed write, so a full disk is not hammered

Record = namedtuple("Record", "kind seq stamp payload")

# Indirections the tests replace to inject I/O faults.
_write = os.write
_fdatasync = os.fdatasync


@njit(nogil=True, cache=True)
def journal_put(slots, pos, kind, seq, stamp, src, src_off, length):
    """Hot side: fill the ring slot of position `pos` with a record (payload src[src_off:src_off+length]).

    Returns False, leaving the slot untouched, for an unknown kind or a payload longer than 104 bytes;
    the caller counts that and does not publish the slot.
    """
    if length < 0 or length > REC_MAX_PAYLOAD or kind < K_SENT or kind > K_NOTE:
        return False
    rec = slots[pos & (slots.shape[0] - 1)]
    rec[REC_KIND] = kind
    rec[REC_LEN] = length
    put_u16(rec, REC_RESERVED, 0)
    put_u32(rec, REC_CRC, 0)
    put_u64(rec, REC_SEQ, seq)
    put_u64(rec, REC_STAMP, stamp)
    for i in range(length):
        rec[REC_PAYLOAD + i] = src[src_off + i]
    return True


def _crc_table() -> np.ndarray:
    """The byte table of CRC-32 as zlib.crc32 computes it (reflected polynomial 0xEDB88320)."""
    table = np.zeros(256, np.int64)
    for b in range(256):
        c = b
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[b] = c
    return table


CRC_TABLE = _crc_table()


@njit(nogil=True, cache=True)
def _crc32(buf, start, end, crc, table):
    """zlib.crc32(buf[start:end], crc), one table lookup per byte."""
    crc ^= 0xFFFFFFFF
    for i in range(start, end):
        crc = table[(crc ^ buf[i]) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@njit(nogil=True, cache=True)
def record_crc(rec, off, table):
    """The CRC of the record at rec[off:off+128]: over bytes [0:4] and [8:24+len], the CRC field left out."""
    return _crc32(rec, off + REC_SEQ, off + REC_PAYLOAD + rec[off + REC_LEN],
                  _crc32(rec, off, off + REC_CRC, 0, table), table)


@njit(nogil=True, cache=True)
def record_ok(buf, off, table):
    """Whether the record at buf[off:off+128] is one the writer could have written (kind, length, CRC)."""
    kind = buf[off + REC_KIND]
    if kind < K_SENT or kind > K_NOTE or buf[off + REC_LEN] > REC_MAX_PAYLOAD:
        return False
    stored = (np.int64(buf[off + REC_CRC]) | (np.int64(buf[off + REC_CRC + 1]) << 8)
              | (np.int64(buf[off + REC_CRC + 2]) << 16) | (np.int64(buf[off + REC_CRC + 3]) << 24))
    return stored == record_crc(buf, off, table)


@njit(nogil=True, cache=True)
def _check_records(buf, count, table, ok):
    """ok[i] = record_ok of the i-th record of buf, for the first `count` records."""
    for i in range(count):
        ok[i] = record_ok(buf, i * REC_SIZE, table)


@njit(nogil=True, cache=True)
def _seal_batch(slots, pos, count, out, skipped, table):
    """Copy `count` slots from ring position `pos` into `out` in file form: the CRC stored, the bytes after
    the payload zeroed, malformed slots left out and counted in skipped[0] (kind) and skipped[1] (length).
    Returns the records put in `out`."""
    mask = slots.shape[0] - 1
    w = 0
    for i in range(count):
        rec = slots[(pos + i) & mask]
        kind, length = rec[REC_KIND], rec[REC_LEN]
        if kind < K_SENT or kind > K_NOTE:
            skipped[0] += 1
            continue
        if length > REC_MAX_PAYLOAD:
            skipped[1] += 1
            continue
        base = w * REC_SIZE
        end = REC_PAYLOAD + length
        for b in range(end):
            out[base + b] = rec[b]
        for b in range(end, REC_SIZE):
            out[base + b] = 0
        crc = record_crc(out, base, table)
        for b in range(4):
            out[base + REC_CRC + b] = (crc >> (8 * b)) & 0xFF
        w += 1
    return w


def _decode(buf, idx) -> list[Record]:
    """The records at the record indices `idx` of buf, fields taken column by column (per record is slow)."""
    recs = buf.reshape(-1, REC_SIZE)[idx]
    kinds, lens = recs[:, REC_KIND].tolist(), recs[:, REC_LEN].tolist()
    seqs = recs[:, REC_SEQ:REC_STAMP].copy().view(">u8")[:, 0].tolist()
    stamps = recs[:, REC_STAMP:REC_PAYLOAD].copy().view(">i8")[:, 0].tolist()
    raw = recs.tobytes()
    payloads = [raw[o:o + n] for o, n in zip(range(REC_PAYLOAD, len(raw), REC_SIZE), lens)]
    return list(map(Record._make, zip(kinds, seqs, stamps, payloads)))


# ---- header --------------------------------------------------------------------------------------
def _pack_header(text: str) -> bytes:
    raw = text.encode("ascii")
    if len(raw) > HDR_TEXT_WIDTH:
        raise ValueError(f"journal header text is {len(raw)} bytes, more than {HDR_TEXT_WIDTH}")
    return _HEADER.pack(MAGIC, VERSION, REC_SIZE, time.time_ns(), raw)


def _torn_header(head: bytes) -> bool:
    """A file shorter than the header that a crash during creation can leave (no record can follow it)."""
    return head[:len(MAGIC)] == MAGIC[:len(head[:len(MAGIC)])] or not any(head)


def _parse_header(head: bytes, path: str) -> dict:
    magic, version, rec_size, created, text = _HEADER.unpack(head)
    if magic != MAGIC:
        raise ValueError(f"{path}: not an order journal (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION or rec_size != REC_SIZE:
        raise ValueError(f"{path}: journal version {version} with {rec_size}-byte records; this build reads "
                         f"version {VERSION} with {REC_SIZE}-byte records")
    return {"version": version, "created_ns": created, "text": text.rstrip(b"\0").decode("ascii", "replace")}


def _report(**kw) -> dict:
    report = {"records": 0, "torn_tail_bytes": 0, "bad_crc": 0, "truncated_to": None}
    report.update(kw)
    return report


# ---- reading and repair --------------------------------------------------------------------------
def _scan(f, path: str, keep: bool):
    """Read a journal from the start: (records if keep else [], report). "truncated_to" is where a torn
    tail starts (None when there is none): the size `repair` cuts the file to."""
    size = os.fstat(f.fileno()).st_size
    head = f.read(HEADER_SIZE)
    if len(head) < HEADER_SIZE:
        if _torn_header(head):
            return [], _report(torn_tail_bytes=len(head), truncated_to=0 if head else None)
        raise ValueError(f"{path}: not an order journal ({len(head)} bytes, shorter than the "
                         f"{HEADER_SIZE}-byte header)")
    report = _report(**_parse_header(head, path))
    records = []
    good_end = HEADER_SIZE  # end of the last record that passed its check
    bad_run = 0             # failed records since then: corruption if a good one follows, torn tail if not
    off = HEADER_SIZE
    buf = np.empty(SCAN_RECORDS * REC_SIZE, np.uint8)
    ok = np.empty(SCAN_RECORDS, np.bool_)
    view = memoryview(buf)
    while True:
        got = f.readinto(view)  # a buffered reader fills the buffer unless it reaches the end of the file
        whole = got // REC_SIZE
        _check_records(buf, whole, CRC_TABLE, ok)
        good = np.flatnonzero(ok[:whole])
        if good.size:
            last = int(good[-1])
            report["records"] += good.size
            report["bad_crc"] += bad_run + last + 1 - good.size  # failed records with a good one after them
            bad_run = whole - 1 - last
            good_end = off + (last + 1) * REC_SIZE
            if keep:
                records.extend(_decode(buf, good))
        else:
            bad_run += whole
        off += whole * REC_SIZE
        if got < len(buf):
            break  # a partial record can only be the last thing in the file
    if size > good_end:
        report["torn_tail_bytes"] = size - good_end
        report["truncated_to"] = good_end
    return records, report


def read_journal(path) -> tuple[list[Record], dict]:
    """Every intact record in file order, and a report: {"records", "torn_tail_bytes", "bad_crc",
    "truncated_to", "version", "created_ns", "text"}. Raises ValueError naming the file if it is no journal."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        return _scan(f, path, keep=True)


def _lock(fd: int, path: str) -> None:
    # One writer per file, across processes: the lock goes with the descriptor, so a SIGKILLed writer
    # leaves nothing to clean up.
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RuntimeError(f"{path}: the journal is open for writing by another writer") from None


def _truncate(fd: int, size: int) -> None:
    os.ftruncate(fd, size)
    os.fsync(fd)  # the cut must be on disk before new records land where the torn tail was


def _sync_dir(path: str) -> None:
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def repair(path) -> dict:
    """Cut a torn tail (a partial last record, or trailing records that fail their check) so appends continue
    cleanly; returns read_journal's report ("truncated_to" is the new size, None if nothing was cut)."""
    path = os.fspath(path)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        _lock(fd, path)
        with open(fd, "rb", closefd=False) as f:
            _, report = _scan(f, path, keep=False)
        if report["truncated_to"] is not None:
            _truncate(fd, report["truncated_to"])
        return report
    finally:
        os.close(fd)


def _tail_end(fd: int, size: int) -> int:
    """End of the last intact record, found by walking back from the end of the file (cheap at start-up)."""
    end = HEADER_SIZE + (size - HEADER_SIZE) // REC_SIZE * REC_SIZE
    rec = np.empty(REC_SIZE, np.uint8)
    while end > HEADER_SIZE:
        os.preadv(fd, [rec], end - REC_SIZE)
        if record_ok(rec, 0, CRC_TABLE):
            break
        end -= REC_SIZE
    return end


def _open(path: str, text: str) -> tuple[int, dict]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        _lock(fd, path)
        size = os.fstat(fd).st_size
        if size < HEADER_SIZE:
            head = os.pread(fd, size, 0)
            if not _torn_header(head):
                raise ValueError(f"{path}: not an order journal ({size} bytes, shorter than the "
                                 f"{HEADER_SIZE}-byte header)")
            if size:
                os.ftruncate(fd, 0)
            os.write(fd, _pack_header(text))
            os.fsync(fd)
            _sync_dir(path)  # the new name must survive a power loss too
            return fd, {"torn_tail_bytes": size, "truncated_to": 0 if size else None}
        _parse_header(os.pread(fd, HEADER_SIZE, 0), path)
        end = _tail_end(fd, size)
        if end < size:
            _truncate(fd, end)
            return fd, {"torn_tail_bytes": size - end, "truncated_to": end}
        return fd, {"torn_tail_bytes": 0, "truncated_to": None}
    except BaseException:
        os.close(fd)
        raise


def open_for_append(path, text: str = "") -> int:
    """An O_APPEND descriptor on the journal, locked against other writers: the file is created with a header
    (`text` goes in it) when missing, its header checked (ValueError naming the file), its torn tail cut."""
    return _open(os.fspath(path), text)[0]


# ---- writer --------------------------------------------------------------------------------------
class JournalWriter:
    """Drains the gateway's journal ring into the file, in ring order, releasing slots only once written
    (and synced, under "always"). Runs as a daemon thread named "journal" or pass by pass via drain().

    For the control plane: records_written, bytes_written, fsyncs, skipped (malformed slots), last_error,
    failed (a sync failed; the ring will back up) and repair_report (the torn tail cut when the file was
    opened: {"torn_tail_bytes", "truncated_to"}).
    """

    def __init__(self, path, hdr, slots, *, fsync: str = "interval", interval_ms: int = 50, poll_us: int = 200,
                 text: str = ""):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"journal fsync policy {fsync!r}: expected one of {', '.join(FSYNC_POLICIES)}")
        if interval_ms <= 0 or poll_us <= 0:
            raise ValueError(f"journal interval_ms ({interval_ms}) and poll_us ({poll_us}) must be positive")
        if not (isinstance(hdr, np.ndarray) and hdr.dtype == np.int64 and hdr.ndim == 1
                and hdr.size >= RING_HDR_WORDS):
            # The ring reads and writes words up to RING_HDR_WORDS unchecked: a short header is memory corruption.
            raise ValueError(f"journal ring header must be an int64 array of {RING_HDR_WORDS} words, got "
                             f"{getattr(hdr, 'dtype', type(hdr))} {getattr(hdr, 'shape', '')}")
        if not (isinstance(slots, np.ndarray) and slots.dtype == np.uint8 and slots.ndim == 2
                and slots.shape[1] == REC_SIZE and slots.shape[0] > 0 and slots.shape[0] & (slots.shape[0] - 1) == 0
                and slots.flags.c_contiguous):
            raise ValueError(f"journal ring slots must be a C-contiguous uint8 array of shape (N, {REC_SIZE}), "
                             f"N a power of two; got {getattr(slots, 'dtype', type(slots))} "
                             f"{getattr(slots, 'shape', '')}")
        self.path = os.fspath(path)
        self.policy = fsync
        self._interval_s = interval_ms / 1000.0
        self._poll_s = poll_us / 1e6
        self._hdr, self._slots = hdr, slots
        self._capacity = slots.shape[0]
        ring_head(hdr)
        ring_available(hdr)  # these compiled (or loaded) now, not when the first record waits
        _seal_batch(slots, 0, 0, np.zeros(REC_SIZE, np.uint8), np.zeros(2, np.int64), CRC_TABLE)
        self._fd, self.repair_report = _open(self.path, text)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._pending = None      # [sealed bytes, bytes already written, slots they came from, records]
        self._dirty_since = None  # monotonic time of the oldest write not yet synced
        self._closed = False
        self.records_written = 0
        self.bytes_written = 0
        self.fsyncs = 0
        self._out = np.zeros(MAX_BATCH * REC_SIZE, np.uint8)  # one batch in file form
        self._skipped = np.zeros(2, np.int64)  # malformed slots, released without being written: kind, length
        self.last_error: str | None = None
        self.failed = False  # a sync failed: nothing more is released (a later sync's success proves nothing)

    # -- one pass -----------------------------------------------------------------------------------
    def drain(self) -> int:
        """One pass on the caller's thread: take up to MAX_BATCH records off the ring, write, sync per policy,
        release. Returns the records written (0 when the ring is empty or the write failed: see last_error)."""
        with self._lock:
            return self._drain()

    @property
    def skipped(self) -> dict:
        """Malformed slots released without being written, by what was wrong: {"kind": n, "length": n}."""
        return {"kind": int(self._skipped[0]), "length": int(self._skipped[1])}

    def _drain(self) -> int:
        if self._closed or self.failed:
            return 0
        if self._pending is None:
            n = ring_available(self._hdr)
            if n == 0:
                self._maybe_sync()
                return 0
            n = min(n, MAX_BATCH)
            records = _seal_batch(self._slots, ring_head(self._hdr), n, self._out, self._skipped, CRC_TABLE)
            self._pending = [memoryview(self._out)[:records * REC_SIZE], 0, n, records]
        # A batch interrupted by an error resumes where it stopped: rewriting it whole would duplicate bytes
        # and shift every later record off the 128-byte grid.
        buf, done, n, records = self._pending
        try:
            while done < len(buf):
                wrote = _write(self._fd, buf[done:])
                if wrote <= 0:
                    raise OSError(f"write returned {wrote}")
                done += wrote
                self._pending[1] = done
        except OSError as e:
            self.last_error = f"write {self.path}: {e}"
            return 0
        if buf and self._dirty_since is None:
            self._dirty_since = time.monotonic()
        if self.policy == "always" and self._dirty_since is not None and not self._sync():
            return 0
        self._pending = None
        ring_release(self._hdr, n)
        self.records_written += records
        self.bytes_written += len(buf)
        self._maybe_sync()
        return records

    def _sync(self) -> bool:
        try:
            _fdatasync(self._fd)  # data and file size; other metadata does not matter for reading back
        except OSError as e:
            self.failed = True
            self.last_error = f"fdatasync {self.path}: {e}; journal writer stopped releasing records"
            return False
        self.fsyncs += 1
        self._dirty_since = None
        return True

    def _maybe_sync(self) -> None:
        if (self.policy == "interval" and self._dirty_since is not None
                and time.monotonic() - self._dirty_since >= self._interval_s):
            self._sync()

    # -- thread ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the daemon thread "journal" that drains the ring every poll_us while it is idle."""
        if self._thread is not None or self._closed:
            raise RuntimeError("journal writer already started or stopped")
        self._thread = threading.Thread(target=self._run, name="journal", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        set_thread_name("journal")
        while not self._stop.is_set():
            try:
                wrote = self.drain()
            except Exception as e:  # a bug, not I/O: stop consuming, so the ring backs up where it shows
                self.last_error = f"journal writer thread died: {e!r}"
                return
            if wrote == 0:
                self._stop.wait(ERROR_BACKOFF_S if self._pending is not None else self._poll_s)

    def _drain_to(self, target: int, deadline: float) -> bool:
        """Drain until every record published before ring position `target` is written; False at the deadline."""
        while True:
            with self._lock:
                before = ring_head(self._hdr)
                self._drain()
                head = ring_head(self._hdr)
                if self._pending is None and head - target >= 0:
                    return True
                if self._closed or self.failed:
                    return False
            if time.monotonic() >= deadline:
                return False
            if head == before:  # no progress (a failing write): wait instead of spinning on it
                time.sleep(min(self._poll_s, ERROR_BACKOFF_S))

    def _target(self) -> int:
        with self._lock:
            return ring_head(self._hdr) + ring_available(self._hdr)

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until every record published before the call is written (and synced unless the policy is
        "none"), draining on this thread too; True if so within `timeout`."""
        if self._closed:
            return False
        deadline = time.monotonic() + timeout
        if not self._drain_to(self._target(), deadline):
            return False
        with self._lock:
            if self.policy != "none" and self._dirty_since is not None:
                return self._sync()
            return not self.failed

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread, drain what is left in the ring, sync (unless the policy is "none") and close the file.
        The producer should be stopped first: records published after this returns stay in the ring."""
        if self._closed:
            return
        deadline = time.monotonic() + timeout
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                self.last_error = f"journal thread did not stop within {timeout} s; file left open"
                return
        if not self._drain_to(self._target(), deadline) and self.last_error is None:
            self.last_error = f"journal not fully drained within {timeout} s"
        with self._lock:
            if self.policy != "none" and self._dirty_since is not None and not self.failed:
                self._sync()
            self._closed = True
            os.close(self._fd)

"""The FIX 4.4 initiator session on the gateway hot thread: orders out, execution reports in, and the
session rules between them (sequence numbers, heartbeats, test requests, resend and gap fill).

The agent in ouch_gateway.py calls in here when `gateway.protocol = "fix"`; risk checks, the order table,
the journal and the kill switch are the same for both protocols. What differs:

- Orders go out as NewOrderSingle / OrderCancelRequest / OrderCancelReplaceRequest from the hot
  templates of fix_hot.py (ClOrdID = the order's UserRefNum; a cancel request's own ClOrdID is
  CANCEL_ID_BASE + its MsgSeqNum). Each is journaled in its OUCH form (what register_sent reads) with the
  FIX MsgSeqNum in the record's seq, so the journal has one format for both protocols.
- ExecutionReports and OrderCancelRejects are turned into the decoded venue events of orders.py
  (put_event), journaled with the venue's MsgSeqNum and applied by the same apply_venue_message.
- Session messages are answered here: Heartbeat, TestRequest (answered with its TestReqID),
  ResendRequest (answered with one SequenceReset-GapFill: an order is never sent twice, a stale one
  least of all), SequenceReset (gap fill and reset), Reject, Logout. A MsgSeqNum above the expected one
  sends one ResendRequest(expected, 0) and drops what arrives until the resend reaches it (the resend
  carries it again); below it, a PossDup is ignored and anything else ends the session.
- Reconciliation after a logon: the gateway sends a TestRequest. The venue answers messages in order,
  so when the Heartbeat with that TestReqID comes back, everything the venue received before it has
  been answered (and any gap we had to fill for the venue has been filled): orders sent before it and
  still unanswered never reached the venue. This is what the OUCH Account Query does.
- The next outgoing MsgSeqNum is persisted in a small memory-mapped file as it is taken (a store, no
  system call; it survives a SIGKILL), because heartbeats and gap fills take numbers the journal does not
  record. The next incoming number comes from the journal: an execution report not journaled is asked
  for again.

Logon and Logout are the control plane's (`FixLink`, on a thread of its own, like OuchLink).
"""

from __future__ import annotations

import logging
import mmap
import os
import socket
import time
from collections import namedtuple

import numpy as np
from numba import njit

from ..runtime.clock import cycles_to_ns
from ..runtime.histogram import hist_record
from ..runtime.layout import H_ACK
from ..runtime.net import copy_bytes, realtime_ns, sock_recv
from ..runtime.ring import ring_free, ring_publish, ring_publish_stamped, ring_tail
from ..risk import checks as rk
from . import fix44 as fx
from . import fix_hot as fh
from . import orders as go
from . import ouch_descriptor as oc
from .journal import K_RECEIVED, journal_put
from .link import LoginRefused, SessionLink
from .session_io import flush, lose_link, out_room

log = logging.getLogger("appliance.gateway")

EAGAIN = 11
CANCEL_ID_BASE = 9 * 10**15  # ClOrdIDs of cancel requests: above every UserRefNum, unique by MsgSeqNum
CANCEL_ALL = 1 << 40  # a FIX cancel takes every share left
SEQ_FILE_MAGIC = 0x4649583434534551  # "FIX44SEQ"

# fx.w words. L = control plane writes, G = gateway hot thread writes.
FX_ON = 0  # L: 1 when the gateway speaks FIX
FX_TX_SEQ = 1  # G (L at logon/logout): the next MsgSeqNum we send
FX_RESEND_UNTIL = 2  # G: a ResendRequest of ours is outstanding until the expected number passes this
FX_NEED_RESEND = 3  # L: the venue's Logon was ahead of us: ask for the gap first
FX_FENCE_ID = 4  # L: the TestReqID whose Heartbeat reconciles (the login count)
FX_TR_SENT = 5  # G: TSC when a TestRequest went out because the venue was quiet (0: none outstanding)
FX_SENDER_LEN = 6  # L
FX_TARGET_LEN = 7  # L
FX_D_SEQ = 8  # L: seq_off of each order template
FX_F_SEQ = 9
FX_G_SEQ = 10
FX_GARBLED = 11  # G: messages that failed framing, BodyLength or CheckSum (ignored, no number consumed)
FX_REJECTS_IN = 12  # G: session Rejects (3) received
FX_GAPS = 13  # G: ResendRequests sent
FX_RESENDS_ANSWERED = 14  # G: ResendRequests from the venue, answered by gap fill
FX_POSSDUP_IGNORED = 15  # G
FX_CANCEL_REJECTS = 16  # G: OrderCancelRejects received
FX_LOGOUTS_IN = 17  # G
FX_SEQ_TOO_LOW = 18  # G: sessions ended because the venue's MsgSeqNum went backwards
FX_TEST_REQS_IN = 19  # G
FX_BUSINESS_REJECTS = 20  # G
FX_ER_IGNORED = 21  # G: ExecutionReports that change nothing here (pending, status, restated)
FX_BAD_FIELDS = 22  # G: messages with a field missing or unreadable (counted, number consumed)
FX_HB_SECONDS = 23  # L: HeartBtInt agreed at logon
FX_WORDS = 32

# Field slots of a parsed message: fx.tag[2 * slot] = value offset, fx.tag[2 * slot + 1] = its length (-1 absent).
T_MSGTYPE, T_SEQ, T_POSSDUP, T_SENDER, T_TARGET, T_CLORD, T_ORIG, T_EXECTYPE = 0, 1, 2, 3, 4, 5, 6, 7
T_LASTQTY, T_LASTPX, T_LEAVES, T_QTY, T_PRICE, T_SIDE, T_SYMBOL, T_EXECID = 8, 9, 10, 11, 12, 13, 14, 15
T_TESTREQ, T_BEGIN, T_END, T_NEWSEQ, T_GAPFILL, T_RESPTO, T_REJREASON, T_CXLREJREASON = (16, 17, 18, 19, 20,
                                                                                         21, 22, 23)
N_SLOTS = 24

HEAD = b"8=FIX.4.4\x019="
HEAD_LEN = len(HEAD)
_HEAD = np.frombuffer(HEAD, dtype=np.uint8).copy()
MAX_MESSAGE = 4096
ADMIN_ROOM = 256  # obuf bytes one session message may take

Fx = namedtuple("Fx", "w tpl_d tpl_f tpl_g comp head tag ts jbuf abuf seqf")
Fx.__doc__ = """FIX session state on the hot thread: words, the three order templates, CompIDs (sender, target),
the BeginString prefix, parsed-field slots, a timespec, journal and session-message scratch, and the
persisted next outgoing MsgSeqNum (seqf[1]; seqf[0] is a magic number)."""


def _seq_file(path: str | None) -> np.ndarray:
    """int64[4] over a memory-mapped file (MAP_SHARED: stores survive a SIGKILL), or plain memory."""
    if not path:
        a = np.zeros(4, dtype=np.int64)
        a[0] = SEQ_FILE_MAGIC
        return a
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        if os.fstat(fd).st_size < 32:
            os.ftruncate(fd, 32)
        mm = mmap.mmap(fd, 32, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    a = np.frombuffer(mm, dtype=np.int64)
    if a[0] != SEQ_FILE_MAGIC:
        a[:] = 0
        a[0] = SEQ_FILE_MAGIC
    return a


def make_fix_state(sender: str = "", target: str = "", seq_path: str | None = None, last_sent_seq: int = 0) -> Fx:
    """FIX state for a gateway; without CompIDs an inert one (the OUCH gateway passes it, unused).
    The next MsgSeqNum is the later of the sequence file's and the journal's last order (`last_sent_seq`)."""
    on = bool(sender and target)
    td, d_off = fh.build_template(fx.MSG_NEW_ORDER_SINGLE, sender or "X", target or "Y")
    tf, f_off = fh.build_template(fx.MSG_ORDER_CANCEL_REQUEST, sender or "X", target or "Y")
    tg, g_off = fh.build_template(fx.MSG_ORDER_CANCEL_REPLACE_REQUEST, sender or "X", target or "Y")
    comp = np.zeros((2, fh.COMP_ID_MAX), dtype=np.uint8)
    s = np.zeros(FX_WORDS, dtype=np.int64)
    for row, name in enumerate((sender, target)):
        b = name.encode("ascii")
        comp[row, :len(b)] = np.frombuffer(b, dtype=np.uint8)
    s[FX_ON] = 1 if on else 0
    s[FX_SENDER_LEN] = len(sender)
    s[FX_TARGET_LEN] = len(target)
    s[FX_D_SEQ], s[FX_F_SEQ], s[FX_G_SEQ] = d_off, f_off, g_off
    seqf = _seq_file(seq_path if on else None)
    s[FX_TX_SEQ] = max(1, int(seqf[1]), last_sent_seq + 1)
    seqf[1] = s[FX_TX_SEQ]
    return Fx(w=s, tpl_d=td, tpl_f=tf, tpl_g=tg, comp=comp, head=_HEAD.copy(),
              tag=np.full(2 * N_SLOTS, -1, dtype=np.int64), ts=np.zeros(2, dtype=np.int64),
              jbuf=np.zeros(128, dtype=np.uint8), abuf=np.zeros(ADMIN_ROOM, dtype=np.uint8), seqf=seqf)


# ---- small readers and writers --------------------------------------------------------------------

@njit(nogil=True, cache=True, inline="always", _nrt=False)
def _int(buf, off, n):
    """A non-negative decimal field, or -1 when absent, empty, too long or not all digits."""
    if n <= 0 or n > 18:
        return -1
    v = 0
    for i in range(n):
        c = buf[off + i]
        if c < 48 or c > 57:
            return -1
        v = v * 10 + (c - 48)
    return v


@njit(nogil=True, cache=True, _nrt=False)
def _price(buf, off, n):
    """A decimal price to 1e-4 fixed point (digits beyond the fourth decimal are cut), or -1."""
    if n <= 0 or n > 24:
        return -1
    v = 0
    dec = -1
    for i in range(n):
        c = buf[off + i]
        if c == 46 and dec < 0:
            dec = 0
        elif c >= 48 and c <= 57:
            if dec < 0:
                v = v * 10 + (c - 48)
            elif dec < 4:
                v = v * 10 + (c - 48)
                dec += 1
        else:
            return -1
    if dec < 0:
        dec = 0
    while dec < 4:
        v *= 10
        dec += 1
    return v


@njit(nogil=True, cache=True, inline="always", _nrt=False)
def _f(fx_, slot):
    return fx_.tag[2 * slot], fx_.tag[2 * slot + 1]


@njit(nogil=True, cache=True, _nrt=False)
def _field_int(fx_, buf, slot):
    off, n = _f(fx_, slot)
    return _int(buf, off, n)


@njit(nogil=True, cache=True, _nrt=False)
def _field_char(fx_, buf, slot):
    """The first byte of a one-character field, or 0."""
    off, n = _f(fx_, slot)
    return buf[off] if n >= 1 else 0


@njit(nogil=True, cache=True, _nrt=False)
def _digits_of(fx_, buf, slot):
    """The number in a field after any non-digit prefix (ExecID 'E123' -> 123), or 0."""
    off, n = _f(fx_, slot)
    v = 0
    for i in range(n if n > 0 else 0):
        c = buf[off + i]
        if c >= 48 and c <= 57 and v < 10**17:
            v = v * 10 + (c - 48)
    return v


@njit(nogil=True, cache=True, _nrt=False)
def _alpha8(fx_, buf, slot):
    """A Symbol packed as wire.alpha_to_int packs it (space padded, big-endian), or 0 when absent or long."""
    off, n = _f(fx_, slot)
    if n <= 0 or n > 8:
        return 0
    v = 0
    for i in range(8):
        v = (v << 8) | (buf[off + i] if i < n else 32)
    return v


@njit(nogil=True, cache=True, _nrt=False)
def _slot(tag):
    if tag == 35:
        return T_MSGTYPE
    if tag == 34:
        return T_SEQ
    if tag == 43:
        return T_POSSDUP
    if tag == 49:
        return T_SENDER
    if tag == 56:
        return T_TARGET
    if tag == 11:
        return T_CLORD
    if tag == 41:
        return T_ORIG
    if tag == 150:
        return T_EXECTYPE
    if tag == 32:
        return T_LASTQTY
    if tag == 31:
        return T_LASTPX
    if tag == 151:
        return T_LEAVES
    if tag == 38:
        return T_QTY
    if tag == 44:
        return T_PRICE
    if tag == 54:
        return T_SIDE
    if tag == 55:
        return T_SYMBOL
    if tag == 17:
        return T_EXECID
    if tag == 112:
        return T_TESTREQ
    if tag == 7:
        return T_BEGIN
    if tag == 16:
        return T_END
    if tag == 36:
        return T_NEWSEQ
    if tag == 123:
        return T_GAPFILL
    if tag == 434:
        return T_RESPTO
    if tag == 103:
        return T_REJREASON
    if tag == 102:
        return T_CXLREJREASON
    return -1


@njit(nogil=True, cache=True, _nrt=False)
def parse_fields(fx_, buf, off, n):
    """Index the fields of one framed message buf[off:off+n] into fx.tag; False if a field is malformed.
    The first occurrence of a tag counts (the messages read here have no repeating groups)."""
    for k in range(fx_.tag.shape[0]):
        fx_.tag[k] = -1 if k & 1 else 0
    i = off
    end = off + n
    while i < end:
        tag = 0
        j = i
        while j < end and buf[j] != 61:  # '='
            c = buf[j]
            if c < 48 or c > 57 or j - i > 6:
                return False
            tag = tag * 10 + (c - 48)
            j += 1
        if j >= end or j == i:
            return False
        v = j + 1
        k = v
        while k < end and buf[k] != 1:
            k += 1
        if k >= end:
            return False
        s = _slot(tag)
        if s >= 0 and fx_.tag[2 * s + 1] < 0:
            fx_.tag[2 * s] = v
            fx_.tag[2 * s + 1] = k - v
        i = k + 1
    return True


@njit(nogil=True, cache=True, _nrt=False)
def frame(fx_, buf, start, end):
    """One FIX message at buf[start:end]: (1, length) when whole and sound, (0, 0) when more bytes are
    needed, (-1, bytes to skip) when garbled (bad BeginString, BodyLength or CheckSum)."""
    avail = end - start
    h = fx_.head
    for i in range(HEAD_LEN):
        if i >= avail:
            return 0, 0
        if buf[start + i] != h[i]:
            return -1, _skip(fx_, buf, start + 1, end) - start
    body = 0
    i = start + HEAD_LEN
    while True:
        if i >= end:
            return 0, 0
        c = buf[i]
        if c == 1:
            break
        if c < 48 or c > 57 or i - start - HEAD_LEN >= 6:
            return -1, _skip(fx_, buf, start + 1, end) - start
        body = body * 10 + (c - 48)
        i += 1
    body_start = i + 1
    total = body_start - start + body + 7  # 10=CCC|
    if total > MAX_MESSAGE:
        return -1, _skip(fx_, buf, start + 1, end) - start
    if avail < total:
        return 0, 0
    t = body_start + body
    if buf[t] != 49 or buf[t + 1] != 48 or buf[t + 2] != 61 or buf[start + total - 1] != 1:
        return -1, _skip(fx_, buf, start + 1, end) - start
    s = 0
    for k in range(start, t):
        s += buf[k]
    cs = _int(buf, t + 3, 3)
    if cs != (s & 0xFF):
        return -1, total
    return 1, total


@njit(nogil=True, cache=True, _nrt=False)
def _skip(fx_, buf, i, end):
    """The next place a message may begin ("8=FIX"), or where a partial one at the end starts."""
    while i < end:
        if buf[i] == 56:
            m = True
            for k in range(1, 5):
                if i + k < end and buf[i + k] != fx_.head[k]:
                    m = False
                    break
            if m:
                return i
        i += 1
    return end


@njit(nogil=True, cache=True, inline="always", _nrt=False)
def _put_int(buf, off, v):
    """v in decimal at buf[off:]; the offset after it."""
    nd = 1
    t = v
    while t >= 10:
        t //= 10
        nd += 1
    for i in range(nd - 1, -1, -1):
        buf[off + i] = 48 + v % 10
        v //= 10
    return off + nd


@njit(nogil=True, cache=True, inline="always", _nrt=False)
def _put_tag(buf, off, tag):
    off = _put_int(buf, off, tag)
    buf[off] = 61
    return off + 1


@njit(nogil=True, cache=True, inline="always", _nrt=False)
def _put_int_field(buf, off, tag, v):
    off = _put_int(buf, _put_tag(buf, off, tag), v)
    buf[off] = 1
    return off + 1


@njit(nogil=True, cache=True, inline="always", _nrt=False)
def _take_seq(fx_):
    """The next outgoing MsgSeqNum, persisted as it is taken."""
    seq = fx_.w[FX_TX_SEQ]
    fx_.w[FX_TX_SEQ] = seq + 1
    fx_.seqf[1] = seq + 1
    return seq


# ---- session messages out -------------------------------------------------------------------------

ADM_HEARTBEAT = 48  # '0'
ADM_TEST_REQUEST = 49  # '1'
ADM_RESEND_REQUEST = 50  # '2'
ADM_GAP_FILL = 52  # '4'
ADM_LOGOUT = 53  # '5'


@njit(nogil=True, cache=True, _nrt=False)
def send_admin(gw, fx_, mt, a, seq, now_ns, echo=None, echo_off=0, echo_len=-1):
    """Queue one session message in obuf: Heartbeat (a = TestReqID to echo, or -1; or the bytes
    echo[echo_off:echo_off + echo_len], TestReqID being a string), TestRequest (a = its id), ResendRequest
    (a = BeginSeqNo, EndSeqNo 0), SequenceReset-GapFill (a = NewSeqNo, sent as `seq` with PossDupFlag),
    Logout. Takes a MsgSeqNum unless it is a gap fill. False when obuf is full."""
    if not out_room(gw, ADMIN_ROOM):
        return False
    b = fx_.abuf
    o = _put_tag(b, 0, 35)
    b[o] = mt
    b[o + 1] = 1
    o += 2
    o = _put_tag(b, o, 49)
    for k in range(fx_.w[FX_SENDER_LEN]):
        b[o + k] = fx_.comp[0, k]
    o += fx_.w[FX_SENDER_LEN]
    b[o] = 1
    o = _put_tag(b, o + 1, 56)
    for k in range(fx_.w[FX_TARGET_LEN]):
        b[o + k] = fx_.comp[1, k]
    o += fx_.w[FX_TARGET_LEN]
    b[o] = 1
    o += 1
    if mt != ADM_GAP_FILL:
        seq = _take_seq(fx_)
    o = _put_int_field(b, o, 34, seq)
    if mt == ADM_GAP_FILL:
        o = _put_tag(b, o, 43)
        b[o] = 89  # 'Y'
        b[o + 1] = 1
        o += 2
    o = _put_tag(b, o, 52)
    fh._put_timestamp(b, o, now_ns)
    b[o + 21] = 1
    o += 22
    if mt == ADM_GAP_FILL:
        o = _put_tag(b, o, 122)
        fh._put_timestamp(b, o, now_ns)
        b[o + 21] = 1
        o += 22
        o = _put_tag(b, o, 123)
        b[o] = 89
        b[o + 1] = 1
        o = _put_int_field(b, o + 2, 36, a)
    elif mt == ADM_RESEND_REQUEST:
        o = _put_int_field(b, o, 7, a)
        o = _put_int_field(b, o, 16, 0)
    elif mt == ADM_HEARTBEAT and echo is not None and echo_len >= 0:
        o = _put_tag(b, o, 112)
        n = min(echo_len, ADMIN_ROOM - 64 - o)
        for k in range(n):
            b[o + k] = echo[echo_off + k]
        b[o + n] = 1
        o += n + 1
    elif (mt == ADM_HEARTBEAT and a >= 0) or mt == ADM_TEST_REQUEST:
        o = _put_int_field(b, o, 112, a)
    out = gw.obuf
    p = gw.w[go.W_OUT_TAIL]
    for k in range(HEAD_LEN):
        out[p + k] = fx_.head[k]
    q = _put_int(out, p + HEAD_LEN, o)
    out[q] = 1
    q += 1
    copy_bytes(out, q, b, 0, o)
    q += o
    s = 0
    for k in range(p, q):
        s += out[k]
    q = _put_tag(out, q, 10)
    fh._put_digits(out, q, 3, s & 0xFF)
    out[q + 3] = 1
    gw.w[go.W_OUT_TAIL] = q + 4
    return True


# ---- orders out -----------------------------------------------------------------------------------

@njit(nogil=True, cache=True, inline="always", _nrt=False)
def _emit(gw, tpl, start, end):
    """Copy a message encoded in a template to the tail of obuf."""
    p = gw.w[go.W_OUT_TAIL]
    copy_bytes(gw.obuf, p, tpl, start, end - start)
    gw.w[go.W_OUT_TAIL] = p + end - start


@njit(nogil=True, cache=True, _nrt=False)
def queue_new(gw, fx_, urn, sym, side, px, qty, tif, now_ns):
    """NewOrderSingle for an order; its journal form is the OUCH Enter Order in fx.jbuf. (journal length,
    MsgSeqNum), or (-1, error) when a value cannot be encoded."""
    seq = fx_.w[FX_TX_SEQ]
    start, end = fh.encode_new_order(fx_.tpl_d, fx_.w[FX_D_SEQ], seq, now_ns, urn, 49 if side == go.SIDE_BUY else 50,
                                     qty, fh.ORD_TYPE_LIMIT, px, 51 if tif == 73 else 48, now_ns, gw.sym_stock[sym])
    if start < 0:
        return -1, end
    _take_seq(fx_)
    _emit(gw, fx_.tpl_d, start, end)
    oc.enc_enter_order(fx_.jbuf, 0, urn, 66 if side == go.SIDE_BUY else 83, qty, gw.sym_stock[sym], px, tif, 89, 80,
                       78, 78, gw.msg[:14])
    return oc.EO_SIZE, seq


@njit(nogil=True, cache=True, _nrt=False)
def queue_replace(gw, fx_, j, urn, px, qty, tif, now_ns):
    """OrderCancelReplaceRequest of table order j to (px, qty open); OrderQty is the new total, so it counts
    what already filled. Journal form: the OUCH Replace Order."""
    seq = fx_.w[FX_TX_SEQ]
    start, end = fh.encode_replace(fx_.tpl_g, fx_.w[FX_G_SEQ], seq, now_ns, gw.o_urn[j], urn,
                                   49 if gw.o_side[j] == go.SIDE_BUY else 50, qty + gw.o_cum[j], fh.ORD_TYPE_LIMIT,
                                   px, 51 if tif == 73 else 48, now_ns, gw.sym_stock[gw.o_sym[j]])
    if start < 0:
        return -1, end
    _take_seq(fx_)
    _emit(gw, fx_.tpl_g, start, end)
    oc.enc_replace_order(fx_.jbuf, 0, gw.o_urn[j], urn, qty, px, tif, 89, 78, gw.msg[:14])
    return oc.RO_SIZE, seq


@njit(nogil=True, cache=True, _nrt=False)
def queue_cancel(gw, fx_, i, now_ns):
    """OrderCancelRequest for table order i. Journal form: the OUCH Cancel Order."""
    seq = fx_.w[FX_TX_SEQ]
    start, end = fh.encode_cancel(fx_.tpl_f, fx_.w[FX_F_SEQ], seq, now_ns, gw.o_urn[i], CANCEL_ID_BASE + seq,
                                  49 if gw.o_side[i] == go.SIDE_BUY else 50, gw.o_qty[i] + gw.o_cum[i], now_ns,
                                  gw.sym_stock[gw.o_sym[i]])
    if start < 0:
        return -1, end
    _take_seq(fx_)
    _emit(gw, fx_.tpl_f, start, end)
    oc.enc_cancel_order(fx_.jbuf, 0, gw.o_urn[i], 0)
    return oc.CO_SIZE, seq


# ---- messages in ----------------------------------------------------------------------------------

@njit(nogil=True, cache=True, _nrt=False)
def _exec_event(gw, fx_, buf, d):
    """Decode an ExecutionReport into venue-event words; its OUCH message type, or 0 when it changes nothing."""
    for k in range(d.shape[0]):
        d[k] = 0
    et = _field_char(fx_, buf, T_EXECTYPE)
    cl = _field_int(fx_, buf, T_CLORD)
    orig = _field_int(fx_, buf, T_ORIG)
    d[oc.V_USER_REF] = cl
    d[oc.V_SIDE] = 66 if _field_char(fx_, buf, T_SIDE) == 49 else 83
    d[oc.V_SYMBOL] = _alpha8(fx_, buf, T_SYMBOL)
    off, n = _f(fx_, T_PRICE)
    d[oc.V_PRICE] = _price(buf, off, n) if n > 0 else 0
    leaves = _field_int(fx_, buf, T_LEAVES)
    if et == 48:  # '0' New
        if cl < 0 or leaves < 0:
            return -1
        d[oc.V_QUANTITY] = leaves
        d[oc.V_STATE] = 76 if leaves > 0 else 68  # 'L' live, 'D' dead
        return oc.MSG_ACCEPTED
    if et == 53:  # '5' Replaced
        if cl < 0 or orig < 0 or leaves < 0:
            return -1
        d[oc.V_ORIG_USER_REF] = orig
        d[oc.V_QUANTITY] = leaves
        d[oc.V_STATE] = 76 if leaves > 0 else 68
        return oc.MSG_REPLACED
    if et == 70 or et == 49 or et == 50:  # 'F' Trade (and FIX 4.2's '1'/'2' partial fill / fill)
        qty = _field_int(fx_, buf, T_LASTQTY)
        off, n = _f(fx_, T_LASTPX)
        px = _price(buf, off, n)
        if cl < 0 or qty <= 0 or px < 0:
            return -1
        d[oc.V_QUANTITY] = qty
        d[oc.V_PRICE] = px
        d[oc.V_MATCH] = _digits_of(fx_, buf, T_EXECID)
        return oc.MSG_EXECUTED
    if et == 52 or et == 67 or et == 51:  # '4' Canceled, 'C' Expired, '3' Done for day
        urn = orig if orig >= 0 and (cl < 0 or cl >= CANCEL_ID_BASE or et == 52) else cl
        if urn < 0:
            return -1
        d[oc.V_USER_REF] = urn
        d[oc.V_QUANTITY] = CANCEL_ALL
        return oc.MSG_CANCELED
    if et == 56:  # '8' Rejected
        if cl < 0:
            return -1
        r = _field_int(fx_, buf, T_REJREASON)
        d[oc.V_REASON] = r if r >= 0 else 99
        return oc.MSG_REJECTED
    return 0  # pending new / cancel / replace, order status, restated: nothing changes here


@njit(nogil=True, cache=True, _nrt=False)
def _cancel_reject_event(gw, fx_, buf, d):
    """OrderCancelReject: a refused replace rejects the replacement (the original stands); a refused cancel
    puts the order back to working. Returns the event type to journal and apply, or 0."""
    for k in range(d.shape[0]):
        d[k] = 0
    if _field_char(fx_, buf, T_RESPTO) == 50:  # '2' replace
        cl = _field_int(fx_, buf, T_CLORD)
        if cl < 0:
            return -1
        d[oc.V_USER_REF] = cl
        r = _field_int(fx_, buf, T_CXLREJREASON)
        d[oc.V_REASON] = r if r >= 0 else 99
        return oc.MSG_REJECTED
    orig = _field_int(fx_, buf, T_ORIG)
    i = go.slot_of(gw, orig) if orig >= 0 else -1
    if i >= 0 and gw.o_state[i] == go.OS_PENDING_CANCEL:
        gw.o_state[i] = go.OS_PARTIAL if gw.o_cum[i] > 0 else go.OS_NEW
    return 0


@njit(nogil=True, cache=True, _nrt=False)
def _comp_ok(fx_, buf):
    """SenderCompID is the venue's and TargetCompID ours."""
    for slot, row, ln in ((T_SENDER, 1, FX_TARGET_LEN), (T_TARGET, 0, FX_SENDER_LEN)):
        off, n = _f(fx_, slot)
        if n != fx_.w[ln]:
            return False
        for k in range(n):
            if buf[off + k] != fx_.comp[row, k]:
                return False
    return True


@njit(nogil=True, cache=True, _nrt=False)
def _app(gw, fx_, lim, mt, buf, seq, up_slots, up_pos, up_mask, jr_slots, jr_pos, hist, mult, now):
    """An in-sequence ExecutionReport or OrderCancelReject: journal its event, apply it; (updates, journaled)."""
    d = gw.dec
    r = _exec_event(gw, fx_, buf, d) if mt == 56 else _cancel_reject_event(gw, fx_, buf, d)
    if mt == 57:
        fx_.w[FX_CANCEL_REJECTS] += 1
    if r < 0:
        fx_.w[FX_BAD_FIELDS] += 1
        return 0, 0
    if r == 0:
        if mt == 56:
            fx_.w[FX_ER_IGNORED] += 1
        return 0, 0
    d[oc.V_TYPE] = r
    n = go.put_event(fx_.jbuf, 0, d)
    journal_put(jr_slots, jr_pos, K_RECEIVED, seq, now, fx_.jbuf, 0, n)
    urn = d[oc.V_USER_REF]
    i = go.slot_of(gw, urn)
    if i >= 0 and r == oc.MSG_ACCEPTED and gw.o_state[i] == go.OS_PENDING_NEW:
        hist_record(hist[H_ACK], cycles_to_ns(now - gw.o_sent[i], mult))
    ups = go.apply_venue_message(gw, fx_.jbuf, 0, n, up_slots, up_pos, up_mask, True, now)
    if r == oc.MSG_EXECUTED and i >= 0:
        s = gw.o_sym[i]
        if abs(gw.pos[s]) > lim[rk.L_MAX_POSITION] or gw.w[go.W_GROSS] > lim[rk.L_MAX_GROSS]:
            gw.w[go.W_BREACH] = 1
    return ups, 1


@njit(nogil=True, cache=True, _nrt=False)
def _session(gw, fx_, mt, buf, seq, now_ns):
    """An in-sequence session message; returns the next expected MsgSeqNum (or -1: the session ends)."""
    w = fx_.w
    if mt == 48:  # Heartbeat
        tr = _field_int(fx_, buf, T_TESTREQ)
        if tr >= 0 and tr == w[FX_FENCE_ID] and gw.w[go.W_RECONCILED] == 0:
            go._reconcile(gw, 0)  # everything the venue got before our TestRequest is answered
        return seq + 1
    if mt == 49:  # TestRequest
        w[FX_TEST_REQS_IN] += 1
        off, n = _f(fx_, T_TESTREQ)
        send_admin(gw, fx_, ADM_HEARTBEAT, -1, 0, now_ns, buf, off, n)
        return seq + 1
    if mt == 50:  # ResendRequest: we never resend an order; fill the whole gap
        begin = _field_int(fx_, buf, T_BEGIN)
        if begin >= 1 and begin < w[FX_TX_SEQ]:
            send_admin(gw, fx_, ADM_GAP_FILL, w[FX_TX_SEQ], begin, now_ns)
            if gw.w[go.W_RECONCILED] == 0:
                gw.w[go.W_NEED_QUERY] = 1  # the fill covered our TestRequest too: the venue drops it, so ask again
        w[FX_RESENDS_ANSWERED] += 1
        return seq + 1
    if mt == 51:  # Reject
        w[FX_REJECTS_IN] += 1
        return seq + 1
    if mt == 52:  # SequenceReset-GapFill (Reset mode is handled before sequencing)
        new = _field_int(fx_, buf, T_NEWSEQ)
        return new if new > seq else seq + 1
    if mt == 53:  # Logout
        w[FX_LOGOUTS_IN] += 1
        send_admin(gw, fx_, ADM_LOGOUT, 0, 0, now_ns)
        return -1
    if mt == 106:  # 'j' BusinessMessageReject
        w[FX_BUSINESS_REJECTS] += 1
        return seq + 1
    if mt == 65:  # Logon on a logged-on session
        return -1
    gw.w[go.W_BAD_MSGS] += 1
    return seq + 1


@njit(nogil=True, cache=True, _nrt=False)
def _apply_buffered(gw, fx_, lim, up_hdr, up_slots, jr_hdr, jr_slots, hist, mult, now, now_ns):
    """Frame and act on the messages buffered in ibuf, as far as the rings have room; work done."""
    w = gw.w
    end = w[go.W_IN_LEN]
    if end == 0:
        return 0
    up_cap = up_slots.shape[0]
    room = ring_free(up_hdr, up_cap) // 2  # a Replaced makes two updates
    jr_room = ring_free(jr_hdr, jr_slots.shape[0])
    if jr_room < room:
        room = jr_room
    if room > go.FRAME_BATCH:
        room = go.FRAME_BATCH
    if room <= 0:
        return 0
    buf = gw.ibuf
    up_pos = ring_tail(up_hdr)
    jr_pos = ring_tail(jr_hdr)
    ups = 0
    jrs = 0
    p = 0
    done = 0
    lost = False
    while p < end and jrs < room and not lost:
        st, ln = frame(fx_, buf, p, end)
        if st == 0:
            break
        if st < 0:
            fx_.w[FX_GARBLED] += 1
            p += ln
            continue
        done += 1
        off = p
        p += ln
        if not parse_fields(fx_, buf, off, ln):
            fx_.w[FX_GARBLED] += 1
            continue
        seq = _field_int(fx_, buf, T_SEQ)
        mt = _field_char(fx_, buf, T_MSGTYPE)
        if seq < 0 or fx_.tag[2 * T_MSGTYPE + 1] != 1 or not _comp_ok(fx_, buf):
            fx_.w[FX_BAD_FIELDS] += 1  # not this session's message, or no number: the session cannot go on
            send_admin(gw, fx_, ADM_LOGOUT, 0, 0, now_ns)
            lost = True
            break
        expected = w[go.W_NEXT_EXPECTED]
        if mt == 52 and _field_char(fx_, buf, T_GAPFILL) != 89:  # SequenceReset-Reset: MsgSeqNum does not count
            new = _field_int(fx_, buf, T_NEWSEQ)
            if new > expected:
                w[go.W_NEXT_EXPECTED] = new
            continue
        if seq < expected:
            if _field_char(fx_, buf, T_POSSDUP) == 89:
                fx_.w[FX_POSSDUP_IGNORED] += 1
                continue
            fx_.w[FX_SEQ_TOO_LOW] += 1
            send_admin(gw, fx_, ADM_LOGOUT, 0, 0, now_ns)
            lost = True
            break
        if seq > expected:
            if mt == 53:  # the venue is leaving: no resend
                fx_.w[FX_LOGOUTS_IN] += 1
                lost = True
                break
            if mt == 50:  # its ResendRequest is answered now; the gap before it is ours to recover
                _session(gw, fx_, mt, buf, seq, now_ns)
            if fx_.w[FX_RESEND_UNTIL] == 0:
                send_admin(gw, fx_, ADM_RESEND_REQUEST, expected, 0, now_ns)
                fx_.w[FX_GAPS] += 1
            if seq > fx_.w[FX_RESEND_UNTIL]:
                fx_.w[FX_RESEND_UNTIL] = seq
            continue  # dropped: the resend brings it again
        if mt == 56 or mt == 57:
            u, j = _app(gw, fx_, lim, mt, buf, seq, up_slots, up_pos + ups, up_cap - 1, jr_slots, jr_pos + jrs,
                        hist, mult, now)
            ups += u
            jrs += j
            nxt = seq + 1
        else:
            nxt = _session(gw, fx_, mt, buf, seq, now_ns)
            if nxt < 0:
                w[go.W_NEXT_EXPECTED] = seq + 1
                lost = True
                break
        w[go.W_NEXT_EXPECTED] = nxt
        if fx_.w[FX_RESEND_UNTIL] != 0 and nxt > fx_.w[FX_RESEND_UNTIL]:
            fx_.w[FX_RESEND_UNTIL] = 0
    if jrs:
        ring_publish(jr_hdr, jrs)
    if ups:
        ring_publish_stamped(up_hdr, up_slots, up_pos, ups)
    left = end - p
    for j in range(left):
        buf[j] = buf[p + j]
    w[go.W_IN_LEN] = left
    if lost:
        flush(gw)
        lose_link(gw)
    elif w[go.W_OUT_TAIL] > w[go.W_OUT_HEAD] and not flush(gw):
        lose_link(gw)
    return done


@njit(nogil=True, cache=True, _nrt=False)
def receive(gw, fx_, lim, up_hdr, up_slots, jr_hdr, jr_slots, hist, mult, now):
    """Read what the venue sent and act on it; work done."""
    w = gw.w
    now_ns = realtime_ns(fx_.ts)
    work = _apply_buffered(gw, fx_, lim, up_hdr, up_slots, jr_hdr, jr_slots, hist, mult, now, now_ns)
    if w[go.W_LINK] != go.LINK_UP:
        return work
    have = w[go.W_IN_LEN]
    space = gw.ibuf.shape[0] - have
    if space < MAX_MESSAGE:
        return work  # the rings are full: leave the rest in the socket
    n = sock_recv(w[go.W_FD], gw.ibuf, have, space)
    if n > 0:
        w[go.W_IN_LEN] = have + n
        w[go.W_LAST_RECV] = now
        fx_.w[FX_TR_SENT] = 0
        work += 1 + _apply_buffered(gw, fx_, lim, up_hdr, up_slots, jr_hdr, jr_slots, hist, mult, now, now_ns)
    elif n == 0 or n != -EAGAIN:
        if n != 0:
            w[go.W_RECV_ERRORS] += 1
        lose_link(gw)
        work += 1
    return work


@njit(nogil=True, cache=True, _nrt=False)
def keepalive(gw, fx_, now):
    """Heartbeat after heartbeat_ms without sending; a TestRequest after heartbeat_ms of silence (once);
    True if something was queued."""
    w = gw.w
    now_ns = 0
    queued = False
    if w[go.W_NEED_QUERY] != 0:
        now_ns = realtime_ns(fx_.ts)
        if fx_.w[FX_NEED_RESEND] != 0:
            if send_admin(gw, fx_, ADM_RESEND_REQUEST, w[go.W_NEXT_EXPECTED], 0, now_ns):
                fx_.w[FX_NEED_RESEND] = 0
                fx_.w[FX_GAPS] += 1
        if fx_.w[FX_NEED_RESEND] == 0:
            w[go.W_Q_FENCE] = w[go.W_MAX_URN]
            if send_admin(gw, fx_, ADM_TEST_REQUEST, fx_.w[FX_FENCE_ID], 0, now_ns):
                w[go.W_NEED_QUERY] = 0
                w[go.W_Q_SENT] += 1
                queued = True
    if now - w[go.W_LAST_SEND] > w[go.W_HB_CYCLES]:
        if now_ns == 0:
            now_ns = realtime_ns(fx_.ts)
        if send_admin(gw, fx_, ADM_HEARTBEAT, -1, 0, now_ns):
            w[go.W_HEARTBEATS_SENT] += 1
            queued = True
    if now - w[go.W_LAST_RECV] > w[go.W_HB_CYCLES] and fx_.w[FX_TR_SENT] == 0:
        if now_ns == 0:
            now_ns = realtime_ns(fx_.ts)
        if send_admin(gw, fx_, ADM_TEST_REQUEST, 1_000_000_000 + fx_.w[FX_TX_SEQ], 0, now_ns):
            fx_.w[FX_TR_SENT] = now
            queued = True
    if queued:
        w[go.W_LAST_SEND] = now
    return queued


# ---- the session (control plane) ------------------------------------------------------------------

LogonRefused = LoginRefused


class FixLink(SessionLink):
    """Logs the FIX gateway on (and on again after a loss, with backoff) and hands the socket to the hot
    thread; sends the Logout at a clean stop."""

    name = "FIX"

    def __init__(self, gcfg, gw: go.Gw, fxs: Fx, tsc_hz: float):
        self.heartbeat_s = max(1, round(gcfg.heartbeat_ms / 1000))
        super().__init__(gcfg, gw, tsc_hz, self.heartbeat_s)
        self.fx = fxs
        fxs.w[FX_HB_SECONDS] = self.heartbeat_s

    def _take_seq(self) -> int:
        seq = int(self.fx.w[FX_TX_SEQ])
        self.fx.w[FX_TX_SEQ] = seq + 1
        self.fx.seqf[1] = seq + 1
        return seq

    def _encode(self, msg_type: bytes, fields) -> bytes:
        return fx.encode(msg_type, fields, self.cfg.sender_comp_id, self.cfg.target_comp_id, self._take_seq(),
                         time.time())

    def login(self) -> None:
        """Connect, send Logon with our next MsgSeqNum, read the venue's Logon; then the hot thread asks for any
        gap and sends the reconciling TestRequest."""
        c = self.cfg
        w = self.gw.w
        sock = socket.create_connection((c.host, c.port), timeout=c.connect_timeout_ms / 1000)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            my_seq = int(self.fx.w[FX_TX_SEQ])
            sock.sendall(self._encode(fx.MSG_LOGON, [(fx.TAG_ENCRYPT_METHOD, b"0"),
                                                     (fx.TAG_HEART_BT_INT, self.heartbeat_s)]))
            parser = fx.FixStreamParser()
            msg = None
            rest = b""
            deadline = time.monotonic() + c.connect_timeout_ms / 1000
            while msg is None:
                if time.monotonic() > deadline:
                    raise ConnectionError("no Logon answer from the venue in time")
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("the venue closed the connection during logon")
                items = parser.feed(data)
                for k, item in enumerate(items):
                    if isinstance(item, fx.FixMessage):
                        msg = item
                        # whatever followed the venue's Logon belongs to the session: the hot thread reads it
                        rest = b"".join(x.raw for x in items[k + 1:] if isinstance(x, fx.FixMessage))
                        break
            rest += bytes(parser._buf)  # and a message cut short at the end of the read
            if msg.msg_type == fx.MSG_LOGOUT:
                raise LogonRefused("logon refused: " + msg.get_str(fx.TAG_TEXT, "(no reason given)"))
            if msg.msg_type != fx.MSG_LOGON:
                raise ConnectionError(f"expected Logon, got MsgType {msg.msg_type!r}")
            if msg.get_str(fx.TAG_SENDER_COMP_ID) != c.target_comp_id:
                raise ConnectionError(f"Logon from SenderCompID {msg.get_str(fx.TAG_SENDER_COMP_ID)!r}, expected "
                                      f"{c.target_comp_id!r}")
            venue_seq = int(msg.seq_num or 0)
            expected = int(w[go.W_NEXT_EXPECTED])
            if venue_seq < expected:
                raise LogonRefused(f"the venue's MsgSeqNum {venue_seq} is below the {expected} we expect; its "
                                   "session was reset (ask the venue; journal kept)")
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        f = self.fx.w
        if venue_seq > expected:
            f[FX_NEED_RESEND] = 1  # the hot thread asks for [expected, ...] before the fence
            f[FX_RESEND_UNTIL] = venue_seq
        else:
            f[FX_NEED_RESEND] = 0
            f[FX_RESEND_UNTIL] = 0
            w[go.W_NEXT_EXPECTED] = venue_seq + 1
        self.logins += 1
        f[FX_FENCE_ID] = self.logins
        f[FX_TR_SENT] = 0
        n = min(len(rest), self.gw.ibuf.shape[0])
        self.gw.ibuf[:n] = np.frombuffer(rest[:n], dtype=np.uint8)
        w[go.W_IN_LEN] = n
        w[go.W_RECONCILED] = 0
        w[go.W_NEED_QUERY] = 1
        w[go.W_KILL_DONE] = 0
        w[go.W_OUT_HEAD] = 0
        w[go.W_OUT_TAIL] = 0
        w[go.W_LAST_RECV] = 0
        w[go.W_FD] = sock.fileno()
        self.sock = sock
        self.down_since = None
        w[go.W_LINK] = go.LINK_UP  # last, after every word above (stores are not reordered on x86)
        log.info("gateway: FIX logon to %s:%d as %s -> %s (our MsgSeqNum %d, the venue's %d, we expected %d)",
                 c.host, c.port, c.sender_comp_id, c.target_comp_id, my_seq, venue_seq, expected)

    def logout(self, timeout: float = 1.0) -> None:
        """After the hot threads stopped: Logout, wait briefly for the venue's, close."""
        self.poll()
        if self.sock is not None and int(self.gw.w[go.W_LINK]) == go.LINK_UP:
            try:
                self.sock.setblocking(True)
                self.sock.settimeout(timeout)
                self.sock.sendall(self._encode(fx.MSG_LOGOUT, []))
                deadline = time.monotonic() + timeout
                seen = b""
                while time.monotonic() < deadline and b"\x0135=5\x01" not in seen:
                    data = self.sock.recv(65536)  # the venue answers with its Logout
                    if not data:
                        break
                    seen = seen[-8:] + data
            except OSError as e:
                log.debug("gateway: FIX logout: %s", e)
            self.gw.w[go.W_LINK] = go.LINK_DOWN
        if self.sock is not None:
            self.sock.close()
            self.sock = None


COUNTER_NAMES = {FX_GARBLED: "garbled", FX_REJECTS_IN: "rejects_received", FX_GAPS: "resend_requests_sent",
                 FX_RESENDS_ANSWERED: "resend_requests_answered", FX_POSSDUP_IGNORED: "possdup_ignored",
                 FX_CANCEL_REJECTS: "cancel_rejects", FX_LOGOUTS_IN: "logouts_received",
                 FX_SEQ_TOO_LOW: "seq_too_low", FX_TEST_REQS_IN: "test_requests_received",
                 FX_BUSINESS_REJECTS: "business_rejects", FX_ER_IGNORED: "exec_reports_ignored",
                 FX_BAD_FIELDS: "bad_fields"}


def counters(fxs: Fx) -> dict:
    """The session's counters by name (racy reads: monitoring)."""
    return {name: int(fxs.w[k]) for k, name in COUNTER_NAMES.items()}


def seq_path_for(journal_path: str) -> str:
    """Where the next outgoing MsgSeqNum is kept, beside the journal."""
    return journal_path + ".fixseq"

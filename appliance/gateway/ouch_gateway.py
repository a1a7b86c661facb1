"""The gateway agent: risk-checked orders out, the venue's answers in, on one hot thread; OUCH 5.0 over
SoupBinTCP here, FIX 4.4 through fix_gateway.py (`gateway.protocol`), with the same risk checks, order
table, journal and kill switch.

Per unit of work the gateway reads what the venue sent (SoupBinTCP packets framed in place; each
sequenced OUCH message journaled, applied to the order table and passed to the strategy as an update),
acts on the kill switch, then takes a batch of order intents from the strategy, checks each against the
risk limits, journals it, encodes it into its SoupBinTCP Unsequenced Data packet and hands the batch to
one non-blocking send(). Nothing here blocks, allocates or takes a lock.

The session itself (TCP connect, Login Request / Accepted, Account Query, reconnect with backoff,
Logout) is the control plane's: `OuchLink` below logs in on a thread of its own, then hands the socket to
the hot thread through `w[W_FD]` and `w[W_LINK]`; the hot thread hands it back (LINK_LOST) when it dies.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import numpy as np
from numba import njit

from ..risk import checks as rk
from ..runtime.atomics import load_acquire, load_relaxed, rdtsc
from ..runtime.clock import cycles_to_ns
from ..runtime.event import KIND_CANCEL, KIND_NEW, KIND_ORDER, KIND_REPLACE
from ..runtime.histogram import hist_record
from ..runtime.layout import (
    C_BACKPRESSURE, C_EVENTS_IN, C_EVENTS_OUT, CTL_KILL, H_ACK, H_HOP_SG, H_RISK, H_SEND, H_T2S, H_T2T,
)
from ..runtime.net import realtime_ns, sock_recv
from ..runtime.ring import (
    ring_available, ring_free, ring_head, ring_publish, ring_publish_stamped, ring_release, ring_tail,
)
from ..runtime.wire import get_u32
from . import fix_gateway as fg
from . import orders as go
from . import ouch_descriptor as oc
from . import soupbintcp_descriptor as sb
from .journal import K_RECEIVED, K_SENT, journal_put
from .link import LoginRefused, SessionLink
from .session_io import flush, lose_link, out_room

log = logging.getLogger("appliance.gateway")

EAGAIN = 11
NS_PER_DAY = 86_400 * 10**9
MSG_ROOM = 64  # bytes one packet (header + largest order message) may take in obuf
FIX_MSG_ROOM = 256  # bytes one FIX order message may take

_B = 66  # 'B'
_S = 83  # 'S'


# ---- sending --------------------------------------------------------------------------------------

@njit(nogil=True, cache=True, inline="always", _nrt=False)
def _clordid(gw, urn):
    """ClOrdID = the UserRefNum in decimal, left-justified (the venue echoes it; it also names the order)."""
    c = gw.msg
    v = urn
    digits = 1
    while v >= 10 ** digits:
        digits += 1
    for j in range(14):
        c[j] = 32
    for j in range(digits - 1, -1, -1):
        c[j] = 48 + v % 10
        v //= 10
    return c[:14]


@njit(nogil=True, cache=True, _nrt=False)
def _queue_enter(gw, urn, sym, side, px, qty, tif):
    off = sb.put_header(gw.obuf, gw.w[go.W_OUT_TAIL], sb.PKT_UNSEQUENCED, oc.EO_SIZE)
    oc.enc_enter_order(gw.obuf, off, urn, _B if side == go.SIDE_BUY else _S, qty, gw.sym_stock[sym], px,
                       tif, 89, 80, 78, 78, _clordid(gw, urn))  # display Y, capacity P, ISO N, cross N
    gw.w[go.W_OUT_TAIL] = off + oc.EO_SIZE
    return off, oc.EO_SIZE


@njit(nogil=True, cache=True, _nrt=False)
def _queue_replace(gw, orig, urn, px, qty, tif):
    off = sb.put_header(gw.obuf, gw.w[go.W_OUT_TAIL], sb.PKT_UNSEQUENCED, oc.RO_SIZE)
    oc.enc_replace_order(gw.obuf, off, orig, urn, qty, px, tif, 89, 78, _clordid(gw, urn))
    gw.w[go.W_OUT_TAIL] = off + oc.RO_SIZE
    return off, oc.RO_SIZE


@njit(nogil=True, cache=True, _nrt=False)
def _queue_cancel(gw, urn):
    off = sb.put_header(gw.obuf, gw.w[go.W_OUT_TAIL], sb.PKT_UNSEQUENCED, oc.CO_SIZE)
    oc.enc_cancel_order(gw.obuf, off, urn, 0)
    gw.w[go.W_OUT_TAIL] = off + oc.CO_SIZE
    return off, oc.CO_SIZE


@njit(nogil=True, cache=True, _nrt=False)
def _queue_intent(gw, fxs, ev, now_ns):
    """Encode an admitted intent at the tail of obuf in the session's protocol; (journal buffer, offset, length,
    journal seq): OUCH journals the bytes it sends, FIX the OUCH form of its message with its MsgSeqNum.
    Length -1 when FIX cannot encode a value."""
    tif = ev.flags if ev.flags else 48
    if fxs.w[fg.FX_ON] == 0:
        if ev.kind == KIND_NEW:
            off, ln = _queue_enter(gw, ev.ref, ev.symbol, ev.side, ev.px, ev.qty, tif)
        elif ev.kind == KIND_REPLACE:
            off, ln = _queue_replace(gw, ev.aux, ev.ref, ev.px, ev.qty, tif)
        else:
            off, ln = _queue_cancel(gw, ev.ref)
        return gw.obuf, off, ln, 0
    _clordid(gw, ev.ref)
    if ev.kind == KIND_NEW:
        ln, seq = fg.queue_new(gw, fxs, ev.ref, ev.symbol, ev.side, ev.px, ev.qty, tif, now_ns)
    elif ev.kind == KIND_REPLACE:
        ln, seq = fg.queue_replace(gw, fxs, go.slot_of(gw, ev.aux), ev.ref, ev.px, ev.qty, tif, now_ns)
    else:
        ln, seq = fg.queue_cancel(gw, fxs, go.slot_of(gw, ev.ref), now_ns)
    return fxs.jbuf, 0, ln, seq


@njit(nogil=True, cache=True, _nrt=False)
def _queue_cancel_of(gw, fxs, i, now_ns):
    """A cancel of table order i in the session's protocol; (journal buffer, offset, length, journal seq)."""
    if fxs.w[fg.FX_ON] == 0:
        off, ln = _queue_cancel(gw, gw.o_urn[i])
        return gw.obuf, off, ln, 0
    ln, seq = fg.queue_cancel(gw, fxs, i, now_ns)
    return fxs.jbuf, 0, ln, seq


@njit(nogil=True, cache=True, inline="always", _nrt=False)
def _room(fxs, n):
    """obuf bytes n messages may take in the session's protocol."""
    return n * (FIX_MSG_ROOM if fxs.w[fg.FX_ON] != 0 else MSG_ROOM)


@njit(nogil=True, cache=True, _nrt=False)
def _reject_update(out, pos, mask, ev, reason):
    """Tell the strategy its intent never reached the wire."""
    u = out[pos & mask]
    u.kind = KIND_ORDER
    u.side = ev.side
    u.flags = go.OS_REJECTED
    u.symbol = ev.symbol
    u.seq = 0
    u.t_in = 0
    u.ref = ev.ref
    u.px = ev.px
    u.qty = 0
    u.px2 = 0
    u.qty2 = ev.kind  # which request was refused: a refused cancel or replace leaves the order as it was
    u.aux = reason


@njit(nogil=True, cache=True, _nrt=False)
def _admit(gw, lim, ctl, ev, now, hz):
    """Risk and session checks for one intent; R_OK or the reason it is refused."""
    w = gw.w
    if ev.kind == KIND_CANCEL:
        if load_relaxed(w, go.W_LINK) != go.LINK_UP:
            return rk.R_SESSION
        i = go.slot_of(gw, ev.ref)
        if i < 0 or not go.is_open(gw.o_state[i]) or gw.o_state[i] == go.OS_PENDING_CANCEL:
            return rk.R_UNKNOWN_ORDER
        return rk.R_OK
    if load_relaxed(ctl, CTL_KILL) != 0:
        return rk.R_KILL_SWITCH
    if load_relaxed(w, go.W_LINK) != go.LINK_UP or w[go.W_RECONCILED] == 0:
        return rk.R_SESSION
    if ev.ref <= w[go.W_MAX_URN]:
        return rk.R_SEQUENCE
    if not go.slot_free(gw, ev.ref):
        return rk.R_TABLE
    if ev.symbol >= gw.pos.shape[0]:
        return rk.R_UNKNOWN_ORDER
    replacing = 0
    side = ev.side
    if ev.kind == KIND_REPLACE:
        j = go.slot_of(gw, ev.aux)
        if j < 0 or (gw.o_state[j] != go.OS_NEW and gw.o_state[j] != go.OS_PARTIAL):
            return rk.R_UNKNOWN_ORDER
        replacing = j + 1
        side = gw.o_side[j]
    return rk.check_order(gw, lim, ev.symbol, side, np.int64(ev.px), np.int64(ev.qty), np.int64(ev.px2),
                          np.int64(ev.qty2), replacing, now, hz)


@njit(nogil=True, cache=True, _nrt=False)
def _take_intents(ctl, gw, fxs, lim, counters, in_hdr, in_slots, up_hdr, up_slots, jr_hdr, jr_slots, hist, mult,
                  hz, batch):
    """Check, journal, encode and send up to a batch of intents; returns how many were taken."""
    n = ring_available(in_hdr)
    if n == 0:
        return 0
    if n > batch:
        n = batch
    up_cap = up_slots.shape[0]
    up_free = ring_free(up_hdr, up_cap)
    jr_free = ring_free(jr_hdr, jr_slots.shape[0])
    if up_free < n:
        n = up_free
    if jr_free < n:
        n = jr_free
        gw.w[go.W_JOURNAL_FULL] += 1
    if n <= 0 or not out_room(gw, _room(fxs, n)):
        counters[C_BACKPRESSURE] += 1
        return 0
    in_mask = in_slots.shape[0] - 1
    up_mask = up_cap - 1
    src = ring_head(in_hdr)
    up_pos = ring_tail(up_hdr)
    jr_pos = ring_tail(jr_hdr)
    ups = 0
    jrs = 0
    sent = 0
    t_read = rdtsc()
    now_ns = realtime_ns(fxs.ts) if fxs.w[fg.FX_ON] != 0 else 0  # FIX SendingTime / TransactTime
    for k in range(n):
        ev = in_slots[(src + k) & in_mask]
        hist_record(hist[H_HOP_SG], cycles_to_ns(t_read - ev.t_hop, mult))
        r = _admit(gw, lim, ctl, ev, t_read, hz)
        if r != rk.R_OK:
            gw.rej[r] += 1
            _reject_update(up_slots, up_pos + ups, up_mask, ev, r)
            ups += 1
            continue
        jb, off, ln, jseq = _queue_intent(gw, fxs, ev, now_ns)
        if ln < 0:
            gw.rej[rk.R_PRICE] += 1  # a value the protocol cannot carry (risk limits normally stop it first)
            _reject_update(up_slots, up_pos + ups, up_mask, ev, rk.R_PRICE)
            ups += 1
            continue
        if ev.kind == KIND_NEW:
            go.open_order(gw, ev.ref, ev.symbol, ev.side, ev.px, ev.qty, 0, t_read)
            gw.w[go.W_SENT_NEW] += 1
        elif ev.kind == KIND_REPLACE:
            j = go.slot_of(gw, ev.aux)
            go.open_order(gw, ev.ref, gw.o_sym[j], gw.o_side[j], ev.px, ev.qty, ev.aux, t_read)
            gw.o_state[j] = go.OS_PENDING_REPLACE
            gw.w[go.W_SENT_REPLACE] += 1
        else:
            gw.o_state[go.slot_of(gw, ev.ref)] = go.OS_PENDING_CANCEL
            gw.w[go.W_SENT_CANCEL] += 1
        journal_put(jr_slots, jr_pos + jrs, K_SENT, jseq, t_read, jb, off, ln)
        jrs += 1
        sent += 1
    t_checked = rdtsc()
    if jrs:
        ring_publish(jr_hdr, jrs)  # journaled before it is on the wire
    t_sent = t_checked
    if sent:
        hist_record(hist[H_RISK], cycles_to_ns((t_checked - t_read) // sent, mult))
        ok = flush(gw)
        t_sent = rdtsc()
        gw.w[go.W_LAST_SEND] = t_sent
        hist_record(hist[H_SEND], cycles_to_ns(t_sent - t_checked, mult))
        if not ok:
            lose_link(gw)
        for k in range(n):
            ev = in_slots[(src + k) & in_mask]
            if ev.t_in != 0 and ev.kind != KIND_CANCEL:
                hist_record(hist[H_T2T], cycles_to_ns(t_sent - ev.t_in, mult))
                hist_record(hist[H_T2S], cycles_to_ns(t_checked - ev.t_in, mult))
    ring_release(in_hdr, n)
    if ups:
        ring_publish_stamped(up_hdr, up_slots, up_pos, ups)
    counters[C_EVENTS_IN] += n
    counters[C_EVENTS_OUT] += ups
    return n


# ---- receiving ------------------------------------------------------------------------------------

@njit(nogil=True, cache=True, _nrt=False)
def _frame(gw, lim, up_hdr, up_slots, jr_hdr, jr_slots, hist, mult, now):
    """Apply the whole packets buffered in ibuf (as many as the rings have room for); updates published."""
    w = gw.w
    end = w[go.W_IN_LEN]
    if end == 0:
        return 0
    up_cap = up_slots.shape[0]
    room = ring_free(up_hdr, up_cap) // 2  # an Order Replaced makes two updates
    jr_room = ring_free(jr_hdr, jr_slots.shape[0])
    if jr_room < room:
        room = jr_room
    if room > go.FRAME_BATCH:
        room = go.FRAME_BATCH
    if room <= 0:
        return 0
    k, resume = sb.frame_packets(gw.ibuf, 0, end, sb.FROM_SERVER, gw.fo[:room], gw.fl[:room],
                                 gw.ft[:room], gw.fc)
    up_pos = ring_tail(up_hdr)
    up_mask = up_cap - 1
    jr_pos = ring_tail(jr_hdr)
    ups = 0
    jrs = 0
    cap = gw.o_urn.shape[0]
    for p in range(k):
        t = gw.ft[p]
        off = gw.fo[p]
        ln = gw.fl[p]
        if t == sb.PKT_SEQUENCED:
            seq = w[go.W_RX_SEQ]
            w[go.W_RX_SEQ] = seq + 1
            if seq < w[go.W_NEXT_EXPECTED]:
                continue  # already applied (from the journal): the venue replayed from further back
            journal_put(jr_slots, jr_pos + jrs, K_RECEIVED, seq, now, gw.ibuf, off, ln)
            jrs += 1
            mt = gw.ibuf[off] if ln > 0 else 0
            i = -1
            if ln >= 13 and (mt == oc.MSG_ACCEPTED or mt == oc.MSG_EXECUTED):
                i = go.slot_of(gw, get_u32(gw.ibuf, off + 9))  # UserRefNum follows the timestamp
                if i >= 0 and mt == oc.MSG_ACCEPTED and gw.o_state[i] == go.OS_PENDING_NEW:
                    hist_record(hist[H_ACK], cycles_to_ns(now - gw.o_sent[i], mult))
            ups += go.apply_venue_message(gw, gw.ibuf, off, ln, up_slots, up_pos + ups, up_mask, True, now)
            w[go.W_NEXT_EXPECTED] = seq + 1
            if i >= 0 and mt == oc.MSG_EXECUTED:
                s = gw.o_sym[i & (cap - 1)]
                if abs(gw.pos[s]) > lim[rk.L_MAX_POSITION] or w[go.W_GROSS] > lim[rk.L_MAX_GROSS]:
                    w[go.W_BREACH] = 1
        elif t == sb.PKT_END_OF_SESSION:
            w[go.W_END_OF_SESSION] = 1
        # Server Heartbeat and Debug: nothing to do beyond having heard from the venue.
    if jrs:
        ring_publish(jr_hdr, jrs)
    if ups:
        ring_publish_stamped(up_hdr, up_slots, up_pos, ups)
    left = end - resume
    for j in range(left):
        gw.ibuf[j] = gw.ibuf[resume + j]
    w[go.W_IN_LEN] = left
    return ups + k


@njit(nogil=True, cache=True, _nrt=False)
def _receive(gw, lim, up_hdr, up_slots, jr_hdr, jr_slots, hist, mult, now):
    w = gw.w
    work = _frame(gw, lim, up_hdr, up_slots, jr_hdr, jr_slots, hist, mult, now)
    have = w[go.W_IN_LEN]
    space = gw.ibuf.shape[0] - have
    if space < 2048:
        return work  # the rings are full: leave the rest in the socket (TCP holds the venue back)
    n = sock_recv(w[go.W_FD], gw.ibuf, have, space)
    if n > 0:
        w[go.W_IN_LEN] = have + n
        w[go.W_LAST_RECV] = now
        work += 1 + _frame(gw, lim, up_hdr, up_slots, jr_hdr, jr_slots, hist, mult, now)
    elif n == 0 or n != -EAGAIN:  # end of stream, or a socket error
        if n != 0:
            w[go.W_RECV_ERRORS] += 1
        lose_link(gw)
        work += 1
    return work


@njit(nogil=True, cache=True, _nrt=False)
def _query(gw, jr_hdr, jr_slots):
    """After a login: the Account Query, journaled like an order. Everything sent before it is answered before
    its response, so orders still unanswered then never reached the venue."""
    w = gw.w
    if ring_free(jr_hdr, jr_slots.shape[0]) < 1 or not out_room(gw, 8):
        return 0
    w[go.W_Q_FENCE] = w[go.W_MAX_URN]
    off = sb.put_header(gw.obuf, w[go.W_OUT_TAIL], sb.PKT_UNSEQUENCED, 1)
    gw.obuf[off] = 81  # 'Q'
    w[go.W_OUT_TAIL] = off + 1
    journal_put(jr_slots, ring_tail(jr_hdr), K_SENT, 0, rdtsc(), gw.obuf, off, 1)
    ring_publish(jr_hdr, 1)
    w[go.W_Q_SENT] += 1
    w[go.W_NEED_QUERY] = 0
    if not flush(gw):
        lose_link(gw)
    return 1


# ---- the kill switch ------------------------------------------------------------------------------

@njit(nogil=True, cache=True, _nrt=False)
def _kill(ctl, gw, fxs, jr_hdr, jr_slots):
    """Cancel every open order once per kill-switch trigger (again after a reconnect); cancels sent."""
    w = gw.w
    trigger = load_relaxed(ctl, CTL_KILL)
    if trigger == 0:
        if w[go.W_KILL_DONE] != 0:  # released: tell the strategy where it stands, so it quotes again
            w[go.W_KILL_DONE] = 0
            w[go.W_RESYNC] = 1
        return 0
    if w[go.W_KILL_DONE] == trigger or w[go.W_RECONCILED] == 0:
        return 0
    n_open = w[go.W_OPEN]
    if ring_free(jr_hdr, jr_slots.shape[0]) < n_open or not out_room(gw, _room(fxs, n_open + 1)):
        return 0  # next time round
    cap = gw.o_urn.shape[0]
    jr_pos = ring_tail(jr_hdr)
    now = rdtsc()
    now_ns = realtime_ns(fxs.ts) if fxs.w[fg.FX_ON] != 0 else 0
    sent = 0
    for s in range(gw.sym_nopen.shape[0]):
        for j in range(gw.sym_nopen[s]):
            i = gw.sym_orders[s, j] & (cap - 1)
            if gw.o_state[i] == go.OS_PENDING_CANCEL:
                continue
            jb, off, ln, jseq = _queue_cancel_of(gw, fxs, i, now_ns)
            if ln < 0:
                continue
            journal_put(jr_slots, jr_pos + sent, K_SENT, jseq, now, jb, off, ln)
            gw.o_state[i] = go.OS_PENDING_CANCEL
            sent += 1
    if sent:
        ring_publish(jr_hdr, sent)
        if not flush(gw):
            lose_link(gw)
            return sent
        w[go.W_LAST_SEND] = rdtsc()
        w[go.W_KILL_LAST_TSC] = w[go.W_LAST_SEND]
        w[go.W_KILL_CANCELS] += sent
        w[go.W_SENT_CANCEL] += sent
    elif w[go.W_KILL_LAST_TSC] < trigger:
        w[go.W_KILL_LAST_TSC] = now
    w[go.W_KILL_DONE] = trigger
    return sent


# ---- the agent ------------------------------------------------------------------------------------

@njit(nogil=True, cache=True, _nrt=False)
def gateway_work(ctl, gw, fxs, lim, counters, in_hdr, in_slots, up_hdr, up_slots, jr_hdr, jr_slots, hist, mult,
                 batch):
    """One unit of gateway work: a batch of intents, then venue input, keep-alive, reconciliation, resync and
    the kill switch; returns work done. `fxs` is the FIX state (inert for OUCH: fxs.w[FX_ON] = 0)."""
    w = gw.w
    hz = w[go.W_HZ]
    fix = fxs.w[fg.FX_ON] != 0
    # Intents first: on the fused thread they were decided on the packet just read, and the venue's
    # answers can wait the few microseconds until after send() (no recv() syscall ahead of the order).
    work = _take_intents(ctl, gw, fxs, lim, counters, in_hdr, in_slots, up_hdr, up_slots, jr_hdr, jr_slots, hist,
                         mult, hz, batch)
    now = rdtsc()
    if load_acquire(w, go.W_LINK) == go.LINK_UP:
        if w[go.W_LAST_RECV] == 0:
            w[go.W_LAST_RECV] = now
            w[go.W_LAST_SEND] = now
        if fix:
            work += fg.receive(gw, fxs, lim, up_hdr, up_slots, jr_hdr, jr_slots, hist, mult, now)
        else:
            work += _receive(gw, lim, up_hdr, up_slots, jr_hdr, jr_slots, hist, mult, now)
        if load_relaxed(w, go.W_LINK) == go.LINK_UP:
            if w[go.W_OUT_TAIL] > w[go.W_OUT_HEAD] and not flush(gw):
                lose_link(gw)
            elif now - w[go.W_LAST_RECV] > w[go.W_IDLE_CYCLES]:
                lose_link(gw)
            elif fix:
                if fg.keepalive(gw, fxs, now):
                    work += 1
                    if not flush(gw):
                        lose_link(gw)
            else:
                if now - w[go.W_LAST_SEND] > w[go.W_HB_CYCLES] and out_room(gw, 8):
                    off = sb.put_header(gw.obuf, w[go.W_OUT_TAIL], sb.PKT_CLIENT_HEARTBEAT, 0)
                    w[go.W_OUT_TAIL] = off
                    w[go.W_HEARTBEATS_SENT] += 1
                    w[go.W_LAST_SEND] = now
                    if not flush(gw):
                        lose_link(gw)
                if w[go.W_NEED_QUERY] != 0:
                    work += _query(gw, jr_hdr, jr_slots)
        if load_relaxed(w, go.W_LINK) == go.LINK_UP:
            if w[go.W_RESYNC] != 0 and w[go.W_RECONCILED] != 0:
                room = ring_free(up_hdr, up_slots.shape[0])
                pos = ring_tail(up_hdr)
                k = go.resync(gw, up_slots, pos, up_slots.shape[0] - 1, room)
                if k > 0:
                    ring_publish_stamped(up_hdr, up_slots, pos, k)
            work += _kill(ctl, gw, fxs, jr_hdr, jr_slots)
    return work


# ---- recovery -------------------------------------------------------------------------------------

@njit(nogil=True, cache=True, _nrt=False)
def replay_record(gw, kind, seq, payload, n, scratch):
    """Apply one journal record at start-up (no updates are published; the strategy is resynchronised later)."""
    if kind == K_SENT:
        go.register_sent(gw, payload, 0, n, 0)
    elif kind == K_RECEIVED:
        if seq >= gw.w[go.W_NEXT_EXPECTED]:
            go.apply_venue_message(gw, payload, 0, n, scratch, 0, 0, False, 0)
            gw.w[go.W_NEXT_EXPECTED] = seq + 1


def recover(gw: go.Gw, records) -> dict:
    """Rebuild the gateway's state from journal records (in order); what was found."""
    from ..runtime.event import EVENT_DTYPE

    scratch = np.zeros(1, dtype=EVENT_DTYPE)
    counts = {"sent": 0, "received": 0, "other": 0, "last_sent_seq": 0}
    for r in records:
        payload = np.frombuffer(r.payload, dtype=np.uint8).copy()
        if r.kind == K_SENT:
            counts["sent"] += 1
            counts["last_sent_seq"] = max(counts["last_sent_seq"], r.seq)  # FIX MsgSeqNum (0 for OUCH)
        elif r.kind == K_RECEIVED:
            counts["received"] += 1
        else:
            counts["other"] += 1
            continue
        replay_record(gw, r.kind, r.seq, payload, len(r.payload), scratch)
    gw.w[go.W_URN_FLOOR] = gw.w[go.W_MAX_URN] + 1
    gw.w[go.W_RESYNC] = 1
    return counts


# ---- the session (control plane) ------------------------------------------------------------------

LoginRejected = LoginRefused  # the name OUCH tests and callers know


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the venue closed the connection during login")
        buf += chunk
    return buf


class OuchLink(SessionLink):
    """Logs the gateway in (and in again after a loss, with backoff) and hands the socket to the hot thread."""

    name = "OUCH"

    def __init__(self, gcfg, gw: go.Gw, tsc_hz: float):
        super().__init__(gcfg, gw, tsc_hz, gcfg.heartbeat_ms / 1000)
        self.session = ""

    def login(self) -> None:
        """Connect, log in asking for the next sequence number not yet applied, ask for the account's state."""
        c = self.cfg
        w = self.gw.w
        sock = socket.create_connection((c.host, c.port), timeout=c.connect_timeout_ms / 1000)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            want = int(w[go.W_NEXT_EXPECTED])
            sock.sendall(sb.login_request(c.username, c.password, "", want))
            head = _read_exact(sock, 3)
            length = int.from_bytes(head[:2], "big")
            body = _read_exact(sock, length - 1)
            if head[2] == sb.PKT_LOGIN_REJECTED:
                reason = body[:1].decode("ascii", "replace")
                raise LoginRejected(f"login rejected: {sb.REJECT_REASONS.get(reason, reason)}")
            if head[2] != sb.PKT_LOGIN_ACCEPTED or length != sb.LACC_SIZE - 2:
                raise ConnectionError(f"expected Login Accepted, got packet type {head[2]:#x} of {length} bytes")
            self.session = sb.alpha_text(body[:sb.SESSION_WIDTH])
            first = sb.parse_numeric(body[sb.SESSION_WIDTH:sb.SESSION_WIDTH + sb.SEQUENCE_WIDTH])
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        w[go.W_RX_SEQ] = first
        w[go.W_RECONCILED] = 0
        w[go.W_NEED_QUERY] = 1
        w[go.W_Q_NOT_BEFORE] = max(0, time.time_ns() % NS_PER_DAY - self.cfg.venue_clock_tolerance_ms * 1_000_000)
        w[go.W_KILL_DONE] = 0
        w[go.W_IN_LEN] = 0
        w[go.W_OUT_HEAD] = 0
        w[go.W_OUT_TAIL] = 0
        w[go.W_LAST_RECV] = 0
        w[go.W_FD] = sock.fileno()
        self.sock = sock
        self.logins += 1
        self.down_since = None
        w[go.W_LINK] = go.LINK_UP  # last, after every word above (stores are not reordered on x86)
        log.info("gateway: logged in to %s:%d as %s, session %r, venue replays from %d (we asked for %d)",
                 c.host, c.port, c.username, self.session, first, want)

    def logout(self) -> None:
        """After the hot threads stopped: a Logout Request, then close."""
        self.poll()
        if self.sock is not None and int(self.gw.w[go.W_LINK]) == go.LINK_UP:
            try:
                self.sock.setblocking(True)
                self.sock.settimeout(1.0)
                self.sock.sendall(sb.logout_request())
            except OSError as e:
                log.warning("gateway: logout not sent: %s", e)
            self.gw.w[go.W_LINK] = go.LINK_DOWN
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def default_journal_path(jcfg) -> str:
    if jcfg.path:
        return jcfg.path
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return os.path.join(state or ".", "orders.journal")

"""The gateway socket's outgoing buffer, shared by the OUCH and FIX sessions on the hot thread.

Messages are queued at the tail of `gw.obuf` and handed to one non-blocking send() per batch; what a
send() that would block leaves behind stays in obuf[head:tail] for the next call. A failed socket is
handed back to the control plane (LINK_LOST), which closes it and reconnects.
"""

from __future__ import annotations

from numba import njit

from ..runtime.atomics import store_release
from ..runtime.net import sock_send
from . import orders as go

EAGAIN = 11


@njit(nogil=True, cache=True, _nrt=False)
def flush(gw):
    """send() what is queued in obuf; False when the socket failed (the link is lost)."""
    w = gw.w
    head = w[go.W_OUT_HEAD]
    tail = w[go.W_OUT_TAIL]
    while head < tail:
        n = sock_send(w[go.W_FD], gw.obuf, head, tail - head)
        if n < 0:
            if n == -EAGAIN:
                break
            w[go.W_SEND_ERRORS] += 1
            return False
        head += n
    if head == tail:
        head = 0
        tail = 0
    w[go.W_OUT_HEAD] = head
    w[go.W_OUT_TAIL] = tail
    return True


@njit(nogil=True, cache=True, inline="always", _nrt=False)
def out_room(gw, need):
    """Make room for `need` more bytes at the tail of obuf (moving unsent bytes to the front); False if none."""
    w = gw.w
    cap = gw.obuf.shape[0]
    if cap - w[go.W_OUT_TAIL] >= need:
        return True
    head = w[go.W_OUT_HEAD]
    n = w[go.W_OUT_TAIL] - head
    if n + need > cap:
        return False
    for j in range(n):
        gw.obuf[j] = gw.obuf[head + j]
    w[go.W_OUT_HEAD] = 0
    w[go.W_OUT_TAIL] = n
    return True


@njit(nogil=True, cache=True, _nrt=False)
def lose_link(gw):
    """The session died under the hot thread: drop buffered bytes and hand the socket back."""
    w = gw.w
    w[go.W_RECONCILED] = 0
    w[go.W_IN_LEN] = 0
    w[go.W_OUT_HEAD] = 0
    w[go.W_OUT_TAIL] = 0
    w[go.W_LINKS_LOST] += 1
    store_release(w, go.W_LINK, go.LINK_LOST)

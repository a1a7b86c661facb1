"""Socket I/O for hot loops (numba calls straight into libc) and the cold-path socket set-up around it.

Hot path: `sock_recv`, `sock_recvfrom`, `sock_send`, `sock_sendto`, `sock_recvmmsg`, `sock_sendmmsg`
take a file descriptor and numpy buffers, never block (MSG_DONTWAIT) and return a byte or message
count, or `-errno` (so `-EAGAIN` means "nothing now"). They work on any socket type: the feed uses
them for UDP, the gateway can use `sock_send`/`sock_recv` on a TCP socket.

Also `monotonic_ns` (clock_gettime, for loops that pace or time out I/O) and `copy_bytes` (memcpy,
for datagram contents).

Cold path: open UDP receive sockets (unicast bind or multicast join, large SO_RCVBUF, nonblocking),
UDP send sockets (multicast TTL, interface, loop), and sockaddr_in byte arrays for `sock_sendto`.

A numpy array is passed to libc by its data address (`arr.ctypes.data`), declared as an integer:
on x86-64 a pointer and an intp travel in the same register, and the ExternalFunction stays cacheable.
"""

from __future__ import annotations

import errno as _errno
import socket
import struct
from collections import namedtuple

import numpy as np
from numba import njit, types

# ---- libc ---------------------------------------------------------------------------------------
MSG_DONTWAIT = 0x40
MSG_WAITFORONE = 0x10000
EAGAIN = _errno.EAGAIN
EINTR = _errno.EINTR
ENOBUFS = _errno.ENOBUFS
CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
SOCKADDR_IN_SIZE = 16

_p = types.intp  # a pointer, passed as an integer address
_recv = types.ExternalFunction("recv", types.intp(types.int32, _p, types.uintp, types.int32))
_send = types.ExternalFunction("send", types.intp(types.int32, _p, types.uintp, types.int32))
_recvfrom = types.ExternalFunction("recvfrom", types.intp(types.int32, _p, types.uintp, types.int32, _p, _p))
_sendto = types.ExternalFunction("sendto", types.intp(types.int32, _p, types.uintp, types.int32, _p, types.uint32))
_recvmmsg = types.ExternalFunction("recvmmsg", types.int32(types.int32, _p, types.uint32, types.int32, _p))
_sendmmsg = types.ExternalFunction("sendmmsg", types.int32(types.int32, _p, types.uint32, types.int32))
_errno_location = types.ExternalFunction("__errno_location", types.CPointer(types.int32)())
_clock_gettime = types.ExternalFunction("clock_gettime", types.int32(types.int32, _p))
_memcpy = types.ExternalFunction("memcpy", _p(_p, _p, types.uintp))


@njit(nogil=True, cache=True, inline="always")
def errno():
    """The calling thread's errno (read right after the failed call)."""
    return _errno_location()[0]


@njit(nogil=True, cache=True, inline="always")
def _result(rc):
    return rc if rc >= 0 else -errno()


@njit(nogil=True, cache=True, inline="always")
def sock_recv(fd, buf, off, size):
    """Read one datagram (or up to `size` stream bytes) into buf[off:]; bytes read, or -errno (-EAGAIN: none)."""
    return _result(_recv(fd, buf.ctypes.data + off, size, MSG_DONTWAIT))


@njit(nogil=True, cache=True, inline="always")
def sock_recvfrom(fd, buf, off, size, addr, addrlen):
    """sock_recv that also writes the sender's sockaddr into `addr` (uint8[16]); `addrlen` is uint32[1]."""
    addrlen[0] = addr.shape[0]
    return _result(_recvfrom(fd, buf.ctypes.data + off, size, MSG_DONTWAIT, addr.ctypes.data, addrlen.ctypes.data))


@njit(nogil=True, cache=True, inline="always")
def sock_send(fd, buf, off, size):
    """Send buf[off:off+size] on a connected socket; bytes sent, or -errno."""
    return _result(_send(fd, buf.ctypes.data + off, size, MSG_DONTWAIT))


@njit(nogil=True, cache=True, inline="always")
def sock_sendto(fd, buf, off, size, addr):
    """Send buf[off:off+size] as one datagram to the sockaddr_in in `addr` (see `sockaddr_in`); bytes or -errno."""
    return _result(_sendto(fd, buf.ctypes.data + off, size, MSG_DONTWAIT, addr.ctypes.data, addr.shape[0]))


@njit(nogil=True, cache=True, inline="always")
def monotonic_ns(ts):
    """CLOCK_MONOTONIC in ns (about 25 ns); `ts` is an int64[2] scratch array (timespec)."""
    _clock_gettime(CLOCK_MONOTONIC, ts.ctypes.data)
    return ts[0] * 1_000_000_000 + ts[1]


@njit(nogil=True, cache=True, inline="always")
def realtime_ns(ts):
    """CLOCK_REALTIME in ns since the epoch (FIX SendingTime); `ts` is an int64[2] scratch array (timespec)."""
    _clock_gettime(CLOCK_REALTIME, ts.ctypes.data)
    return ts[0] * 1_000_000_000 + ts[1]


@njit(nogil=True, cache=True, inline="always")
def copy_bytes(dst, doff, src, soff, size):
    """dst[doff:doff+size] = src[soff:soff+size] for datagram contents, through libc memcpy (no overlap).

    A numba slice assignment runs an element loop about 20x slower, and a plain loop over signed
    indices keeps a negative-index check per byte that stops LLVM from vectorising it.
    """
    _memcpy(dst.ctypes.data + doff, src.ctypes.data + soff, size)


# ---- recvmmsg / sendmmsg batches -------------------------------------------------------------------
# struct mmsghdr on x86-64 Linux: struct msghdr (56 bytes) then unsigned int msg_len, padded to 64.
#   0 msg_name  8 msg_namelen  16 msg_iov  24 msg_iovlen  32 msg_control  40 msg_controllen
#  48 msg_flags  56 msg_len
MMSG_SIZE = 64
_MM_NAME, _MM_NAMELEN, _MM_IOV, _MM_IOVLEN = 0, 8, 16, 24
MM_LEN_U32 = 56 // 4  # msg_len, as an index into a row viewed as uint32
MM_NAMELEN_U32 = 8 // 4
IOV_LEN_U64 = 1  # iov_len, as an index into an iovec row viewed as uint64

MMsgBatch = namedtuple("MMsgBatch", ["hdr32", "iov", "bufs", "names"])
MMsgBatch.__doc__ = """Buffers for sock_recvmmsg / sock_sendmmsg: `bufs[i]` is datagram i, `names[i]` its sockaddr_in."""


def make_mmsg_batch(count: int, size: int) -> MMsgBatch:
    """Allocate `count` datagram buffers of `size` bytes with their iovecs and mmsghdrs wired together."""
    hdr = np.zeros((count, MMSG_SIZE), dtype=np.uint8)
    iov = np.zeros((count, 2), dtype=np.uint64)
    bufs = np.zeros((count, size), dtype=np.uint8)
    names = np.zeros((count, SOCKADDR_IN_SIZE), dtype=np.uint8)
    h64 = hdr.view(np.uint64)
    h32 = hdr.view(np.uint32)
    for i in range(count):
        iov[i, 0] = bufs[i].ctypes.data
        iov[i, 1] = size
        h64[i, _MM_NAME // 8] = names[i].ctypes.data
        h32[i, _MM_NAMELEN // 4] = SOCKADDR_IN_SIZE
        h64[i, _MM_IOV // 8] = iov[i].ctypes.data
        h64[i, _MM_IOVLEN // 8] = 1
    return MMsgBatch(h32, iov, bufs, names)


@njit(nogil=True, cache=True, inline="always")
def sock_recvmmsg(fd, batch):
    """Read up to len(batch.bufs) datagrams in one system call; count read, or -errno. Lengths: `mmsg_len`."""
    count = batch.bufs.shape[0]
    for i in range(count):
        batch.hdr32[i, MM_NAMELEN_U32] = SOCKADDR_IN_SIZE
        batch.iov[i, IOV_LEN_U64] = batch.bufs.shape[1]
    return _result(_recvmmsg(fd, batch.hdr32.ctypes.data, count, MSG_DONTWAIT, 0))


@njit(nogil=True, cache=True, inline="always")
def mmsg_len(batch, i):
    """Length of datagram i after sock_recvmmsg (or bytes sent after sock_sendmmsg)."""
    return batch.hdr32[i, MM_LEN_U32]


@njit(nogil=True, cache=True, inline="always")
def sock_sendmmsg(fd, batch, count, lengths, addr):
    """Send bufs[0:count] (lengths[i] bytes each) to `addr` in one system call; datagrams sent, or -errno."""
    for i in range(count):
        batch.iov[i, IOV_LEN_U64] = lengths[i]
        for j in range(SOCKADDR_IN_SIZE):
            batch.names[i, j] = addr[j]
    return _result(_sendmmsg(fd, batch.hdr32.ctypes.data, count, MSG_DONTWAIT))


# ---- cold path: addresses and sockets --------------------------------------------------------------
def sockaddr_in(host: str, port: int) -> np.ndarray:
    """A struct sockaddr_in as uint8[16] (family in host order, port and address big-endian) for sock_sendto."""
    raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H4s", port, socket.inet_aton(_resolve(host)))
    addr = np.zeros(SOCKADDR_IN_SIZE, dtype=np.uint8)
    addr[:8] = np.frombuffer(raw, dtype=np.uint8)
    return addr


def sockaddr_to_tuple(addr: np.ndarray) -> tuple[str, int]:
    """(host, port) of a sockaddr_in byte array."""
    raw = bytes(addr[:8])
    family = struct.unpack("=H", raw[:2])[0]
    if family != socket.AF_INET:
        raise ValueError(f"not an AF_INET sockaddr (family {family})")
    return socket.inet_ntoa(raw[4:8]), struct.unpack("!H", raw[2:4])[0]


def _resolve(host: str) -> str:
    return socket.gethostbyname(host) if host else "0.0.0.0"


def set_rcvbuf(sock: socket.socket, size: int) -> int:
    """Ask for a `size`-byte receive buffer: SO_RCVBUFFORCE (root, CAP_NET_ADMIN, above rmem_max), else
    SO_RCVBUF (capped by net.core.rmem_max); returns what the kernel granted (it reports double)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def set_sndbuf(sock: socket.socket, size: int) -> int:
    """Like set_rcvbuf, for the send buffer."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


def free_port(kind: str = "udp", host: str = "127.0.0.1") -> int:
    """A loopback UDP or TCP port nothing is bound to right now (for configs that need a port number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_multicast(host: str) -> bool:
    """True for an IPv4 class D (224.0.0.0/4) address."""
    return 224 <= int(_resolve(host).split(".")[0]) <= 239


def udp_receiver(host: str = "127.0.0.1", port: int = 0, *, interface: str = "0.0.0.0",
                 rcvbuf: int = 32 << 20, reuse: bool = False, multicast_loop: bool = True,
                 nonblocking: bool = True) -> socket.socket:
    """A UDP socket receiving on host:port. A multicast `host` binds the group's port and joins the group on
    `interface` (IP_ADD_MEMBERSHIP); a unicast `host` is bound directly. Port 0 picks a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if reuse or is_multicast(host):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            set_rcvbuf(sock, rcvbuf)
        if is_multicast(host):
            group = _resolve(host)
            sock.bind((group, port))  # binding the group, not INADDR_ANY, keeps other groups' traffic out
            mreq = socket.inet_aton(group) + socket.inet_aton(_resolve(interface))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(multicast_loop))
        else:
            sock.bind((_resolve(host), port))
        sock.setblocking(not nonblocking)
    except BaseException:
        sock.close()
        raise
    return sock


def udp_sender(*, bind: tuple[str, int] | None = None, interface: str | None = None, ttl: int = 1,
               multicast_loop: bool = True, sndbuf: int = 4 << 20, nonblocking: bool = True) -> socket.socket:
    """A UDP socket for sock_sendto: multicast goes out of `interface` with `ttl`, looped back locally when
    `multicast_loop` (so a receiver on this host sees it). `bind` pins the source address and port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if sndbuf:
            set_sndbuf(sock, sndbuf)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(multicast_loop))
        if interface:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(_resolve(interface)))
        if bind is not None:
            sock.bind((_resolve(bind[0]), bind[1]))
        sock.setblocking(not nonblocking)
    except BaseException:
        sock.close()
        raise
    return sock

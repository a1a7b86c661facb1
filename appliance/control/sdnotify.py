"""systemd notification protocol (sd_notify) over an AF_UNIX datagram socket, without libsystemd.

Every send is non-blocking and never raises: a lost notification must not take the control plane
down (systemd's watchdog is what notices a process that has really stopped talking).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Mapping

log = logging.getLogger("appliance.control")


def _clean(value: object) -> str:
    # A newline would start a new field (e.g. a STATUS text injecting READY=1); NUL ends the message.
    return str(value).replace("\n", " ").replace("\0", " ")


class Notifier:
    """Sends state changes to the service manager; a no-op when NOTIFY_SOCKET is not set."""

    def __init__(self, address: str | None = None) -> None:
        if address is None:
            address = os.environ.get("NOTIFY_SOCKET") or None
        if address and address[0] not in "/@":
            # e.g. systemd's vsock: addresses, which this implementation does not speak.
            log.warning("sd_notify: unsupported NOTIFY_SOCKET %r, notifications disabled", address)
            address = None
        # A leading '@' names a socket in Linux's abstract namespace, spelt with a NUL byte.
        self._address = "\0" + address[1:] if address and address[0] == "@" else address
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send_raw(self, text: str) -> bool:
        """Send one datagram as-is (fields separated by newlines); True if the kernel took it."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(text.encode(), self._address)
            return True
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.warning("sd_notify to %r failed (further failures not logged): %s",
                            self._address.replace("\0", "@"), e)
            return False

    def send(self, **fields: object) -> bool:
        """Send `KEY=value` fields in one datagram, e.g. send(READY=1, STATUS="serving")."""
        return self.send_raw("\n".join(f"{k}={_clean(v)}" for k, v in fields.items()))

    def ready(self, status: str | None = None) -> bool:
        return self.send(READY=1) if status is None else self.send(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def stopping(self) -> bool:
        return self.send(STOPPING=1)

    def reloading(self) -> bool:
        """RELOADING=1 with the CLOCK_MONOTONIC timestamp that Type=notify-reload requires."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(RELOADING=1, MONOTONIC_USEC=usec)

    def mainpid(self, pid: int) -> bool:
        return self.send(MAINPID=pid)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None if no watchdog is set for us."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
        pid = env.get("WATCHDOG_PID")
        # The variables may have been inherited from a parent that the watchdog is meant for. Except in a
        # onefile binary: its bootloader is the service's main PID, and this process, its child, is the one
        # that watches the hot threads (the bootloader only forwards signals).
        mine = {os.getpid(), os.getppid()} if getattr(sys, "frozen", False) else {os.getpid()}
        if pid is not None and int(pid) not in mine:
            return None
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None

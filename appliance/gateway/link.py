"""The control plane's side of an order-entry session: a thread that logs in, hands the socket to the gateway
hot thread (w[W_FD], then w[W_LINK] = LINK_UP), takes it back when the hot thread gives it up (LINK_LOST)
and logs in again with exponential backoff. OuchLink and FixLink supply `login()` and `logout()`."""

from __future__ import annotations

import logging
import socket
import threading
import time

from . import orders as go

log = logging.getLogger("appliance.gateway")


class LoginRefused(Exception):
    """The venue answered the login and said no (a reason it gives; retried with backoff)."""


class SessionLink:
    """Reconnect loop and socket hand-over shared by the protocols; subclasses implement login and logout."""

    name = "session"

    def __init__(self, gcfg, gw: go.Gw, tsc_hz: float, heartbeat_s: float):
        self.cfg = gcfg
        self.gw = gw
        self.sock: socket.socket | None = None
        self.logins = 0
        self.failures = 0
        self.last_error = ""
        self.down_since: float | None = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        gw.w[go.W_HZ] = int(tsc_hz)
        gw.w[go.W_HB_CYCLES] = int(tsc_hz * heartbeat_s)
        gw.w[go.W_IDLE_CYCLES] = int(tsc_hz * gcfg.idle_timeout_ms / 1000)

    @property
    def up(self) -> bool:
        return int(self.gw.w[go.W_LINK]) == go.LINK_UP

    def login(self) -> None:
        raise NotImplementedError

    def logout(self) -> None:
        raise NotImplementedError

    def poll(self) -> None:
        """Take back a socket the hot thread gave up (LINK_LOST): close it and mark the link down."""
        if int(self.gw.w[go.W_LINK]) == go.LINK_LOST:
            if self.sock is not None:
                self.sock.close()
                self.sock = None
            self.gw.w[go.W_LINK] = go.LINK_DOWN
            self.down_since = time.monotonic()
            log.warning("gateway: %s session to %s:%d lost; reconnecting", self.name, self.cfg.host, self.cfg.port)

    def _main(self) -> None:
        backoff = self.cfg.reconnect_min_ms / 1000
        while not self._stop.is_set():
            self.poll()
            if int(self.gw.w[go.W_LINK]) != go.LINK_DOWN:
                self._stop.wait(0.005)
                continue
            try:
                self.login()
                backoff = self.cfg.reconnect_min_ms / 1000
            except (OSError, LoginRefused) as e:
                self.failures += 1
                self.last_error = str(e)
                log.warning("gateway: cannot log in to %s:%d (%s); next try in %.2f s", self.cfg.host,
                            self.cfg.port, e, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.cfg.reconnect_max_ms / 1000)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=f"{self.name.lower()}-link", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

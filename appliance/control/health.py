"""Hot-thread liveness from heartbeats: the single source for /healthz, the watchdog and the stalled metric."""

import time


class HeartbeatMonitor:
    """Tracks when each hot thread's heartbeat last advanced; a thread is stalled past the timeout."""

    def __init__(self, timeout_s: float, clock=time.monotonic):
        self.timeout_s = timeout_s
        self._clock = clock
        self._last: dict = {}  # thread -> (beat, when it last changed)

    def observe(self, beats: dict) -> None:
        now = self._clock()
        for name, beat in beats.items():
            prev = self._last.get(name)
            if prev is None or prev[0] != beat:
                self._last[name] = (beat, now)

    def silent_for(self) -> dict:
        """Seconds since each thread's heartbeat last advanced."""
        now = self._clock()
        return {name: now - when for name, (_, when) in self._last.items()}

    def stalled(self) -> list:
        return [n for n, s in self.silent_for().items() if s > self.timeout_s]

    def healthy(self) -> bool:
        return bool(self._last) and not self.stalled()

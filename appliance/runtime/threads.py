"""Hot threads: a Python thread that names and pins itself, optionally goes SCHED_FIFO, then enters a nogil numba loop."""

import logging
import os
import threading

from . import libc

log = logging.getLogger("appliance.runtime")


class HotThread:
    """One pinned thread running one numba loop until the arena's stop flag is set."""

    def __init__(self, name: str, core: int, kernel, args: tuple, fifo_priority: int | None = None):
        self.name, self.core, self.kernel, self.args = name, core, kernel, args
        self.fifo_priority = fifo_priority
        self.tid = None
        self.error = None
        self.fifo = False
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"hot-{name}", daemon=True)

    def start(self, timeout: float = 5.0) -> None:
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError(f"hot thread {self.name} did not start within {timeout} s")

    def _run(self) -> None:
        self.tid = threading.get_native_id()
        try:
            libc.set_thread_name(self.name)
            os.sched_setaffinity(0, {self.core})
            if self.fifo_priority:
                try:
                    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.fifo_priority))
                    self.fifo = True
                except OSError as e:
                    log.warning("%s: SCHED_FIFO %d refused (%s); running SCHED_OTHER", self.name, self.fifo_priority, e.strerror)
        except BaseException as e:  # noqa: BLE001 - reported by the control plane
            self.error = e
            self._started.set()
            return
        self._started.set()
        try:
            self.kernel(*self.args)  # releases the GIL until the stop flag is set
        except BaseException as e:  # noqa: BLE001
            self.error = e
            log.error("hot thread %s died: %r", self.name, e)

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

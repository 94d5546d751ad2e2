"""Run a dependency's pure-Python work under a memory and a time bound, and stop it cleanly when it runs away.

Torch-Pruning's dependency graph walk never ends on some attention layouts (torchvision's `swin_t`: its processing
stack grows until the machine has no memory left, and the kernel kills the whole process, exploration and all; its
issues #430, #525 and #527 report the same on YOLO and LLM attention). `bounded(call, what)` runs `call` in the
calling thread while a watchdog thread reads the process's resident memory (/proc/self/statm, where there is one)
and the time; past either bound it raises `Overrun` in the calling thread (PyThreadState_SetAsyncExc: delivered at
the next Python instruction, which a pure-Python walk reaches at once), the call's frames unwind and free what
they held, and the caller gets a one-line `Overrun` that says which bound and by how much.
"""
from __future__ import annotations

import ctypes
import gc
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
GIB = 1 << 30
POLL_SECONDS = 0.05


class Overrun(RuntimeError):
    """A bounded call used more memory or time than it was given."""


class _Stop(BaseException):
    """What the watchdog raises in the bounded thread (a BaseException, so no `except Exception` in the dependency
    swallows it)."""


def resident_bytes() -> int | None:
    """This process's resident memory, or None where /proc is not there to read it."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class _Watchdog:
    def __init__(self, what: str, extra_bytes: int, seconds: float):
        self.what, self.extra_bytes, self.seconds = what, extra_bytes, seconds
        self.thread_id = threading.get_ident()
        self.lock = threading.Lock()
        self.done = False
        self.reason: str | None = None
        self.start_bytes, self.start_time = resident_bytes(), time.monotonic()

    def watch(self) -> None:
        while True:
            time.sleep(POLL_SECONDS)
            reason = self._overrun()
            with self.lock:
                if self.done:
                    return
                if reason:
                    self.reason = reason
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread_id), ctypes.py_object(_Stop))
                    return

    def _overrun(self) -> str | None:
        elapsed = time.monotonic() - self.start_time
        if elapsed > self.seconds:
            return f"{self.what} ran for more than {self.seconds:.0f} s and was stopped"
        now = resident_bytes()
        if self.start_bytes is not None and now is not None and now - self.start_bytes > self.extra_bytes:
            return (f"{self.what} took more than {self.extra_bytes / GIB:.1f} GiB of memory "
                    f"({(now - self.start_bytes) / GIB:.1f} GiB after {elapsed:.1f} s) and was stopped")
        return None

    def finish(self) -> None:
        """No raise after this; one the watchdog set that the thread has not met yet is withdrawn."""
        with self.lock:
            self.done = True
            if self.reason is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread_id), None)


def bounded(call: Callable[[], T], what: str, *, extra_bytes: int = 2 * GIB, seconds: float = 300.0) -> T:
    """`call()`, or `Overrun` once it has taken more than `extra_bytes` of memory beyond what the process held when it
    started, or run for more than `seconds`."""
    dog = _Watchdog(what, extra_bytes, seconds)
    threading.Thread(target=dog.watch, daemon=True, name="ordercomp-bounded").start()
    try:
        try:
            return call()
        finally:
            dog.finish()
    except _Stop:
        gc.collect()  # the walk's cycles hold the memory it took
        raise Overrun(dog.reason) from None

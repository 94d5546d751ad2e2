"""Run a dependency's pure-Python work under a memory and a time bound, and stop it cleanly when it runs away.

Torch-Pruning's dependency graph walk never ends on some attention layouts (torchvision's `swin_t`: its processing
stack grows until the machine has no memory left, and the kernel kills the whole process, exploration and all; its
issues #430, #525 and #527 report the same on YOLO and LLM attention). `bounded(call, what)` runs `call` in the
calling thread while a watchdog thread reads the process's resident memory (/proc/self/statm, where there is one)
and the time; past either bound it raises `Overrun` in the calling thread (PyThreadState_SetAsyncExc: delivered at
the next Python instruction, which a pure-Python walk reaches at once), the call's frames unwind and free what
they held, and the caller gets a one-line `Overrun` that says which bound and by how much.

A stop can be swallowed, and the call must not then run on unbounded. One lost in a finalizer (met inside a
`__del__` or a weakref callback, which Python only reports to `sys.unraisablehook`) is raised again at once: the hook
`bounded` installs wakes the watchdog (the hook itself cannot raise: Python reports and drops what a hook raises).
One a dependency's bare `except:` catches is raised again once the call has run `REFIRE_SECONDS` more or taken half
its memory bound more; not sooner, so that a second stop does not cut short the clean-up (a context manager's exit)
of a call already unwinding from the first.
"""
from __future__ import annotations

import ctypes
import functools
import gc
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
GIB = 1 << 30
POLL_SECONDS = 0.05
REFIRE_SECONDS = 5.0


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
        self.fired_at = self.fired_bytes = None  # when the last stop was raised, and the memory the process held then
        self.wake = threading.Event()  # set when a stop was lost in a finalizer: look again now
        self.start_bytes, self.start_time = resident_bytes(), time.monotonic()

    def watch(self) -> None:
        while True:
            lost = self.wake.wait(POLL_SECONDS)
            self.wake.clear()
            reason = self._overrun()
            with self.lock:
                if self.done:
                    return
                if reason and (lost or self._runs_on_past_its_stop()):
                    self.reason = self.reason or reason
                    self.stop()

    def _runs_on_past_its_stop(self) -> bool:
        if self.fired_at is None:
            return True
        now = resident_bytes()
        grew = now is not None and self.fired_bytes is not None and now - self.fired_bytes > self.extra_bytes / 2
        return grew or time.monotonic() - self.fired_at > REFIRE_SECONDS

    def stop(self) -> None:
        """Raise `_Stop` in the bounded thread at its next Python instruction (again, if an earlier one was lost)."""
        self.fired_at, self.fired_bytes = time.monotonic(), resident_bytes()
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread_id), ctypes.py_object(_Stop))

    def _overrun(self) -> str | None:
        elapsed = time.monotonic() - self.start_time
        if elapsed > self.seconds:
            return f"{self.what} ran for more than {self.seconds:g} s and was stopped"
        now = resident_bytes()
        if self.start_bytes is not None and now is not None and now - self.start_bytes > self.extra_bytes:
            return (f"{self.what} took more than {self.extra_bytes / GIB:.1f} GiB of memory "
                    f"({(now - self.start_bytes) / GIB:.1f} GiB after {elapsed:.1f} s) and was stopped")
        return None

    def finish(self) -> None:
        """No raise after this; one the watchdog set that the thread has not met yet is withdrawn."""
        with self.lock:
            self.done = True
            if self.fired_at is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread_id), None)


_watching: dict[int, list[_Watchdog]] = {}  # each thread's bounded calls, innermost last


def _raise_lost_stops_again(unraisable, *, passed_on) -> None:
    """`sys.unraisablehook` once calls have been bounded: a stop lost in a finalizer wakes the watchdogs of the
    thread it was raised in; anything else goes on to the hook this one replaced."""
    if isinstance(unraisable.exc_type, type) and issubclass(unraisable.exc_type, _Stop):
        for dog in _watching.get(threading.get_ident(), []):
            dog.wake.set()
        return
    passed_on(unraisable)


def _hook_lost_stops() -> None:
    if getattr(sys.unraisablehook, "func", None) is not _raise_lost_stops_again:  # another hook replaced it
        sys.unraisablehook = functools.partial(_raise_lost_stops_again, passed_on=sys.unraisablehook)


def _finish(dog: _Watchdog) -> None:
    """`dog.finish()`, again when a stop the watchdog raised as the call ended interrupts it: a watchdog left
    unfinished would go on raising into whatever the thread runs next."""
    while True:
        try:
            dog.finish()
            return
        except _Stop:
            continue


def bounded(call: Callable[[], T], what: str, *, extra_bytes: int = 2 * GIB, seconds: float = 300.0) -> T:
    """`call()`, or `Overrun` once it has taken more than `extra_bytes` of memory beyond what the process held when it
    started, or run for more than `seconds`."""
    dog = _Watchdog(what, extra_bytes, seconds)
    _hook_lost_stops()
    _watching.setdefault(dog.thread_id, []).append(dog)
    threading.Thread(target=dog.watch, daemon=True, name="ordercomp-bounded").start()
    try:
        try:
            return call()
        finally:
            _finish(dog)
            _watching[dog.thread_id].remove(dog)
            if not _watching[dog.thread_id]:
                del _watching[dog.thread_id]
    except _Stop:
        gc.collect()  # the walk's cycles hold the memory it took
        raise Overrun(dog.reason) from None

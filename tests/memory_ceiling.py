"""A pytest plugin (loaded by conftest): stop the test run, naming the test and showing every thread's stack, when
the test process holds more than a ceiling of memory.

A whole run has peaked at 2.1–4.0 GB (the largest process GNU time saw). Past the ceiling something has run away,
and left alone it takes the machine: the kernel then kills pytest without a word (a CI run died so, at 24 GB, with
no test named). The ceiling is $ORDERCOMP_TEST_MEMORY_CEILING_GIB, 8 GiB unless set. Under pytest-xdist the process
is a worker: xdist then fails that test as "crashed" and goes on with a new worker.
"""
from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time

from ordercomp.bounded import GIB, resident_bytes

POLL_SECONDS = 0.5
EXIT_STATUS = 3
_running = {"test": "collecting the tests"}


def ceiling_bytes() -> int:
    return int(float(os.environ.get("ORDERCOMP_TEST_MEMORY_CEILING_GIB", "8")) * GIB)


def _watch(ceiling: int, config) -> None:
    while True:
        time.sleep(POLL_SECONDS)
        held = resident_bytes()
        if held is not None and held > ceiling:
            capture = config.pluginmanager.getplugin("capturemanager")
            if capture is not None:
                capture.suspend_global_capture()  # what follows goes to the run's own stderr, not a test's capture
            sys.stderr.write(f"\n{_running['test']} took the test process past its memory ceiling of "
                             f"{ceiling / GIB:.1f} GiB ({held / GIB:.1f} GiB); every thread's stack follows, "
                             "then the test process stops\n")
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            sys.stderr.flush()
            os._exit(EXIT_STATUS)


def pytest_configure(config):
    threading.Thread(target=_watch, args=(ceiling_bytes(), config), daemon=True, name="memory-ceiling").start()


def pytest_runtest_logstart(nodeid, location):
    _running["test"] = nodeid

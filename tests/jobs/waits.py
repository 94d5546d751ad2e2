"""How long job tests wait for worker processes.

A job in a worker process takes seconds on an idle machine but minutes on a 2-core machine shared
with a dozen busy processes (measured: 215 s for one tiny exploration at load average 20), so the
waits are generous, and still finite. (A plain module: tests/jobs is on sys.path, not a package.)
"""
WORKER_S = 900

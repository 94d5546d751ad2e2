"""What the dashboard costs: the same exploration from the command line and through the dashboard's job
system with a browser tab open on its Runs page, in one run, and the idle server's CPU with that tab open.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_dashboard.py                       # the default exploration
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_dashboard.py --methods prune,quantize --seeds 1 --epochs 0.2

Targets (issue 15): the dashboard's run takes at most 1.3x the command line's, and the idle server uses
under 5 % of a core. Run it on an idle machine: each run has a fresh step cache, so both compute every
step; the load of anything else moves both times. The server's CPU is its own process's CPU time (user +
system, /proc/<pid>/stat) over wall time, so other processes do not count in it. Needs Chromium at
/usr/bin/chromium (scripts/setup --test). Prints figures; passes or fails nothing.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from ordercomp.deploy.runtimes import cpu_description, cpu_text
from ordercomp.exploration.explorer import ExploreSpec
from ordercomp.jobs import JobStore, start_job
from ordercomp.train import Budget

ROOT = Path(__file__).resolve().parent.parent

CHROMIUM = "/usr/bin/chromium"
IDLE_WINDOW_S = 10.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def core_share(pid: int, seconds: float) -> float:
    """The share of one core the process uses over the next `seconds`."""
    before, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - start)


def cli_run(args, folder: Path) -> float:
    """Wall seconds of `ordercomp explore` with the plan, in a folder of its own (a fresh step cache)."""
    command = [sys.executable, "-m", "ordercomp.cli", "explore", "--methods", args.methods, "--seeds", str(args.seeds),
               "--epochs", str(args.epochs), "--device", "cpu", "--out", str(folder / "out"), "--cache", str(folder / "cache")]
    folder.mkdir(parents=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=folder, check=True, stdout=subprocess.DEVNULL, env=os.environ | {"PYTHONPATH": str(ROOT)})
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(store: Path, log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)], cwd=ROOT,
                              env=os.environ | {"ORDERCOMP_STORE": str(store), "PYTHONPATH": str(ROOT)}, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return server, url
        except OSError:
            time.sleep(0.5)
    raise SystemExit("bench_dashboard: error: streamlit did not answer within 180 s")


def dashboard_run(args, folder: Path) -> dict:
    """The idle server's CPU with a tab open, then the exploration as a job with the tab open on its Runs page."""
    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True)
    store = JobStore(folder / "jobs.sqlite")
    spec = ExploreSpec(methods=tuple(args.methods.split(",")), seeds=args.seeds, budget=Budget(epochs=args.epochs), device="cpu")
    with open(folder / "streamlit.log", "wb") as log:
        server, url = start_server(store.path, log)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{url}/runs")
                page.get_by_role("heading", name="Runs", exact=True).wait_for(timeout=180_000)
                idle = core_share(server.pid, IDLE_WINDOW_S)
                start = time.perf_counter()
                job_id = start_job(store, spec)
                page.goto(f"{url}/runs?job={job_id}")  # the tab follows the run, polling as a user's would
                busy_before = cpu_seconds(server.pid)
                while store.get(job_id)["status"] not in ("done", "failed", "cancelled"):
                    time.sleep(1.0)
                wall = time.perf_counter() - start
                busy = cpu_seconds(server.pid) - busy_before
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    job = store.get(job_id)
    if job["status"] != "done":
        raise SystemExit(f"bench_dashboard: error: the dashboard's job ended {job['status']}: {job['error']}")
    return {"idle": idle, "wall": wall, "server_while_running": busy / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(ExploreSpec().methods))
    parser.add_argument("--seeds", type=int, default=ExploreSpec().seeds)
    parser.add_argument("--epochs", type=float, default=ExploreSpec().budget.epochs)
    args = parser.parse_args()
    print(f"CPU: {cpu_text(cpu_description())}")
    print(f"plan: {args.methods}, {args.seeds} seed(s), {args.epochs:g} epoch(s) per step, the default search, a fresh cache each")
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as scratch:
        cli = cli_run(args, Path(scratch) / "cli")
        print(f"command line: {cli:.1f} s")
        dashboard = dashboard_run(args, Path(scratch) / "dashboard")
    print(f"dashboard job with a tab open: {dashboard['wall']:.1f} s")
    print(f"ratio dashboard / command line: {dashboard['wall'] / cli:.2f} (target <= 1.3)")
    print(f"server while the job ran: {100 * dashboard['server_while_running']:.1f} % of a core")
    print(f"idle server with a tab open: {100 * dashboard['idle']:.1f} % of a core over {IDLE_WINDOW_S:.0f} s (target < 5 %)")


if __name__ == "__main__":
    main()

"""Ray clusters as the README's recipe starts them (issue 19, items 5 and 10): a head and a second node on
this machine, each a `ray start --block` of 1 CPU with token authentication on, run a small exploration
across both nodes; a driver without the token, and an address where something that is not Ray listens,
are one line and exit 2 within seconds.

The cluster is this module's own: its folders in a short temporary folder, its ports chosen free, and the
processes it started stopped by their process group when the module ends (`ray stop` would stop every Ray process
on the machine, other users' clusters too).
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray

from ordercomp.cli import main
from ordercomp.exploration.executors import RAY_AUTH_MODE, RAY_WORKER_NICENESS

RAY = str(Path(sys.executable).with_name("ray"))
AUTH = (RAY_AUTH_MODE, "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")  # where Ray reads this process's token settings
START_S = 120  # the most a node may take to join on a busy machine
SMALL_RUN = ["--model", "digits_cnn", "--methods", "prune,quantize", "--seeds", "1", "--epochs", "0.2"]


@dataclass
class Cluster:
    address: str
    token: Path
    second_node: Path  # the second node's folder: its logs show which jobs ran workers there


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_node(folder: Path, *args: str, env: dict) -> subprocess.Popen:
    """`ray start --block` of one node with 1 CPU, its files under `folder` and its agents on free ports,
    leading its own process group so that all of it can be stopped."""
    ports = [f"--{name}={free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                    "metrics-export-port", "runtime-env-agent-port")]
    with open(folder.with_suffix(".log"), "w") as log:
        return subprocess.Popen([RAY, "start", "--block", "--num-cpus=1", "--num-gpus=0", f"--temp-dir={folder}",
                                 "--object-store-memory=100000000", "--disable-usage-stats", *ports, *args],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_nodes(nodes: list[subprocess.Popen]) -> None:
    """Every process of each node: 5 s to stop on SIGTERM (draining a node whose head is stopping too can take
    half a minute), then SIGKILL to whatever of its process group is left."""
    for node in nodes:
        os.killpg(node.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for node in nodes:
        try:
            node.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(node.pid, signal.SIGKILL)
        except ProcessLookupError:  # the whole group is gone
            pass
        node.wait()


@contextmanager
def driver_auth(mode: str | None, token: Path | None = None):
    """This process's Ray token settings, as a driver started with them has; the earlier ones after."""
    from ray._raylet import AuthenticationTokenLoader, Config

    def apply(values: dict) -> None:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        Config.initialize("")  # Ray caches the mode and the token per process
        AuthenticationTokenLoader.instance().reset_cache()

    before = {name: os.environ.get(name) for name in AUTH}
    apply({RAY_AUTH_MODE: mode, "RAY_AUTH_TOKEN_PATH": token and str(token), "RAY_AUTH_TOKEN": None})
    try:
        yield
    finally:
        apply(before)


def alive_nodes(address: str) -> int:
    from ray._raylet import InnerGcsClient
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    nodes = InnerGcsClient.standalone(address, None, 5000).get_all_node_info(timeout=5).values()
    return sum(node.state == GcsNodeInfo.ALIVE for node in nodes)


def wait_for(condition, what: str, node: subprocess.Popen, log: Path):
    """Until `condition` holds; fails at once, with the last line of its log, when the node's `ray start` has exited."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if node.poll() is not None:
            last = ([line for line in log.read_text(errors="replace").splitlines() if line.strip()] or ["(empty log)"])[-1]
            pytest.fail(f"{what} exited with status {node.returncode}: {last}")
        try:
            if condition():
                return
        except Exception:  # not up yet: Ray's client raises its own error types
            pass
        time.sleep(0.5)
    pytest.fail(f"timed out after {START_S} s waiting for {what}")


@pytest.fixture(scope="module")
def token_cluster():
    """A head and a second node with token authentication, the token in a file of their own (not ~/.ray). Their
    folder is a short one of its own under /tmp, not pytest's: Ray puts its sockets four levels below it, and a
    socket's path may not exceed 107 bytes (pytest's folders, under xdist or a longer TMPDIR, go past it)."""
    with tempfile.TemporaryDirectory(prefix="ray-", dir="/tmp", ignore_cleanup_errors=True) as folder:
        yield from _token_cluster(Path(folder))


def _token_cluster(root: Path):
    token = root / "token"
    token.write_text(secrets.token_hex(32))
    env = {name: value for name, value in os.environ.items() if name not in AUTH}
    env |= {RAY_AUTH_MODE: "token", "RAY_AUTH_TOKEN_PATH": str(token), RAY_WORKER_NICENESS: "0"}
    address = f"127.0.0.1:{free_port()}"
    nodes = [start_node(root / "head", "--head", f"--port={address.split(':')[1]}", "--include-dashboard=false", env=env)]
    try:
        with driver_auth("token", token):
            wait_for(lambda: alive_nodes(address) == 1, "the head", nodes[0], root / "head.log")
            nodes.append(start_node(root / "node2", f"--address={address}", env=env))
            wait_for(lambda: alive_nodes(address) == 2, "the second node", nodes[1], root / "node2.log")
        yield Cluster(address, token, root / "node2")
    finally:
        stop_nodes(nodes)


@pytest.fixture
def silent_server():
    """Something that is not Ray on a local port: it accepts connections and never answers."""
    server, held = socket.create_server(("127.0.0.1", 0)), []

    def hold_connections() -> None:
        try:
            while True:
                held.append(server.accept()[0])
        except OSError:  # the server was closed
            return

    threading.Thread(target=hold_connections, daemon=True).start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for connection in held:
        connection.close()


def one_line_error(capfd, argv) -> str:
    """The command's only line on stderr, read at the file descriptor (Ray's C++ code writes there)."""
    assert main(argv) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ordercomp: error: "), err
    return err


@pytest.mark.timeout(120)  # ray.init retried such a port for more than 300 s
def test_an_address_where_something_else_listens_is_one_line(capfd, tmp_path, silent_server):
    err = one_line_error(capfd, ["explore", "--executor", "ray", "--ray-address", silent_server, "--methods", "prune,quantize",
                                 "--quiet", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    assert f"{silent_server} answers but is not a Ray cluster (no gRPC reply within 5 s)" in err
    assert not ray.is_initialized() and not (tmp_path / "out").exists()


def test_a_driver_without_the_token_is_one_line_saying_how_to_send_it(token_cluster, capfd, tmp_path):
    with driver_auth(None):
        err = one_line_error(capfd, ["explore", "--executor", "ray", "--ray-address", token_cluster.address, *SMALL_RUN,
                                     "--quiet", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    assert (f"the Ray cluster at {token_cluster.address} uses token authentication and this process sent no token "
            "(RAY_AUTH_MODE is not token): set RAY_AUTH_MODE=token") in err
    assert not ray.is_initialized() and not (tmp_path / "out").exists()


def test_an_exploration_runs_on_both_nodes_of_a_token_cluster(token_cluster, capsys, tmp_path):
    with driver_auth("token", token_cluster.token):
        code = main(["explore", "--executor", "ray", "--ray-address", token_cluster.address, *SMALL_RUN,
                     "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "running steps on Ray: 2 CPUs" in err  # both nodes' CPUs
    assert sorted(json.loads((tmp_path / "out" / "exploration.json").read_text())["chain"]) == ["prune", "quantize"]
    # a worker of this driver's job ran on the second node (a worker started for no job is named ffffffff)
    assert [log for log in token_cluster.second_node.glob("session_*/logs/worker-*.out") if log.name.split("-")[2] != "ffffffff"]
    assert not ray.is_initialized()  # the executor left the cluster it joined

"""Executors: who runs the steps of an exploration plan, this process or a Ray cluster.

A plan is a list of chains run for every seed asked for (the exploration's 0..k-1, or a later seed
the race of the contenders adds); a chain's step applies its last method to the model its prefix
made, so per seed the steps form a tree rooted at the base model. An executor turns `Work` (the
base, the data, the step function, the step cache and the events callback) into one `StepResult`
per chain and seed, in plan order:

    InProcessExecutor()                   this process; parent models stay in memory for their children
    RayExecutor("auto" | "HOST:PORT" | None)   one Ray task per step, started as soon as its prefix is done

Both look results up in the same `StepCache` under the same keys and store what they compute there
(the Ray executor stores in the driver, so the cache folder need not be shared between nodes), so
resume and cache hits behave the same. Both send the same `step` events; progress events come from
inside the steps in process and from the driver while it waits on Ray, so a cancel raised by the
events callback stops either (Ray tasks still running are cancelled; finished steps stay cached).

A model built from a user's FILE.py:NAME travels to Ray workers with its classes (registered with
cloudpickle to be pickled by value), since the workers cannot import the user's file.

A dashboard's job connects only to a Ray cluster its operator lists in $ORDERCOMP_RAY_ADDRESSES, or starts a
local one (`check_served_ray_address`): the driver unpickles what a cluster's tasks return, so whoever answers at
an address a user types runs code in the job's process on the server.

A HOST:PORT Ray address is probed before anything connects (`probe_cluster`): a port where no Ray head
listens, or a cluster that refuses this process's authentication token, is one line within seconds
rather than Ray's minutes of retries.

A step's result depends only on its inputs: `run_step` seeds the global RNG with the step's seed,
and a Ray task runs with as many torch threads as CPUs it requests (1 by default); an in-process run
with the same thread count (`torch.set_num_threads`) gives the same numbers, bit for bit on one kind
of CPU.
"""
from __future__ import annotations

import copy
import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Protocol, Sequence

import torch
from torch import nn

from .cache import StepCache
from ..data.datasets import DataBundle
from ..allocator import keep_freed_memory
from ..waiting import spin_briefly
from ..errors import one_line
from ..methods.base import Context
from ..deploy.export import deployed_latency
from ..deploy.onnx_int8 import CannotBuild
from .pipeline import FAILED, INCOMPATIBLE, OK, StepResult, run_step
from ..deploy.runtimes import RuntimeMissing, load_average, machine_load
from ..models.factories import user_modules
from ..order.plan import chain_text
from ..train import Budget, Progress

Chain = tuple[str, ...]
Events = Callable[[dict], None]
EXECUTORS = ("inprocess", "ray")
RAY_POLL_S = 0.5
CONNECT_TIMEOUT_S = 5.0
RAY_WORKER_NICENESS = "RAY_worker_niceness"  # Ray's setting, read from the environment when a cluster starts
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # client preface + empty SETTINGS
HTTP2_SETTINGS = 4  # frame type, the 4th byte of a frame header
RAY_AUTH_MODE = "RAY_AUTH_MODE"  # "token": this process sends the cluster's token (Ray reads it from the environment)
RAY_ADDRESSES_ENV = "ORDERCOMP_RAY_ADDRESSES"  # the Ray clusters a dashboard's users may run their steps on
RAY_OPTIONS = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)


@dataclass(frozen=True)
class StepFunction:
    """Apply chain[-1] to the model its prefix made and measure it on the validation split; with
    `latency`, time it in `runtime`: PyTorch eager, or the runtime of an export format (the model is
    written in that format and run there). Holds only picklable settings, so a Ray worker can run it;
    the data and device come per call."""

    configs: dict
    budget: Budget
    latency: bool = False
    runtime: str = "eager"

    def __call__(self, parent: nn.Module, chain: Chain, seed: int, data: DataBundle, device: torch.device,
                 progress: Progress | None = None) -> tuple[nn.Module | None, StepResult]:
        context = Context(data, self.budget, seed, device, progress)
        model, result = run_step(parent, chain, self.configs, context, latency=self.latency and self.runtime == "eager")
        if self.latency and self.runtime != "eager" and result.status == OK:
            result = deployed_timing(model, result, data, self.runtime)
        return model, result


def deployed_timing(model: nn.Module, result: StepResult, data: DataBundle, runtime: str) -> StepResult:
    """The step's result with the latency of its deployable form in `runtime`; a form that cannot be
    built makes the step incompatible with that runtime (its model still serves later steps)."""
    start = load_average()
    try:
        timing = deployed_latency(model, data, runtime)
    except (CannotBuild, RuntimeMissing) as reason:
        return replace(result, status=INCOMPATIBLE, reason=str(reason), metrics=None)
    except Exception as error:  # the runtime could not run the file it was given: this step fails, the exploration goes on
        return replace(result, status=FAILED, reason=one_line(error), metrics=None)
    return replace(result, metrics=result.metrics | timing, load=machine_load(start))


class Step(Protocol):
    def __call__(self, parent: nn.Module, chain: Chain, seed: int, data: DataBundle, device: torch.device,
                 progress: Progress | None = None) -> tuple[nn.Module | None, StepResult]: ...


@dataclass
class Work:
    """One exploration's steps as an executor sees them."""

    base: nn.Module
    data: DataBundle
    step: Step
    key: Callable[[Chain, int], str]
    cache: StepCache
    device: torch.device
    events: Events
    keep_below: int = 0  # models of chains shorter than this are kept for later plans (in process)


def step_on(step: Step, parent: nn.Module | None, chain: Chain, seed: int, data: DataBundle, device: torch.device,
            progress: Progress | None = None) -> tuple[nn.Module | None, StepResult]:
    """The step, or an incompatible result when its prefix could not be applied."""
    if parent is None:
        return None, StepResult(chain, INCOMPATIBLE, f"{chain_text(chain[:-1])} could not be applied", seed=seed)
    return step(parent, chain, seed, data, device, progress)


def step_event(result: StepResult, done: int, total: int, *, cached: bool = False) -> dict:
    """A finished step for the events callback; `cached` when it came from the step cache, not computed (a resume)."""
    return {"kind": "step", "result": result.to_dict(), "done": done, "total": total, "cached": cached}


def parents_in(plan: list[Chain]) -> set[Chain]:
    """Every prefix some step of the plan builds on (the base is ())."""
    return {chain[:cut] for chain in plan for cut in range(len(chain))}


class InProcessExecutor:
    """Runs the steps one after another in this process. Models stay in memory for their children;
    a cached result needs no model, and a parent that was not kept is rebuilt only when a child needs it."""

    def __init__(self):
        # Per tree, kept across runs: a search extends chains an earlier plan started. A tree is named by
        # the key of its root (base, data, seed, budget), so a screened model never serves a full-budget step.
        self._models: dict[str, dict[Chain, nn.Module | None]] = {}

    def run(self, work: Work, plan: list[Chain], seeds: Sequence[int]) -> list[StepResult]:
        results, total, parents = [], len(plan) * len(seeds), parents_in(plan)
        for seed in seeds:
            models = self._models.setdefault(work.key((), seed), {(): work.base})
            for chain in plan:
                hits = work.cache.hits
                results.append(self._step(work, chain, seed, models, parents))
                work.events(step_event(results[-1], len(results), total, cached=work.cache.hits > hits))
        return results

    def close(self) -> None:
        """Forget the kept models (the exploration is over)."""
        self._models.clear()

    def step_device(self, device: torch.device) -> str:
        """The type of device the steps run on (part of their cache key): this process's."""
        return device.type

    def _step(self, work: Work, chain: Chain, seed: int, models: dict, parents: set[Chain]) -> StepResult:
        key = work.key(chain, seed)
        cached = work.cache.get(key)
        if cached is not None:
            return cached
        model, result = step_on(work.step, self._model_for(work, chain[:-1], seed, models), chain, seed, work.data,
                                work.device, self._progress(work, chain, seed))
        if chain in parents or len(chain) < work.keep_below:
            models[chain] = model
        work.cache.put(key, result)
        return result

    def _model_for(self, work: Work, chain: Chain, seed: int, models: dict) -> nn.Module | None:
        if chain not in models:
            parent = self._model_for(work, chain[:-1], seed, models)
            models[chain] = step_on(work.step, parent, chain, seed, work.data, work.device, self._progress(work, chain, seed))[0]
        return models[chain]

    @staticmethod
    def _progress(work: Work, chain: Chain, seed: int) -> Progress:
        label = chain_text(chain)
        return lambda step, fraction: work.events({"kind": "progress", "label": f"{label}: {step}", "fraction": fraction, "seed": seed})


def require_ray():
    """The ray module, or a ValueError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ValueError("the Ray executor needs Ray, which is not installed: pip install 'ordercomp[ray]' "
                         "(or use --executor inprocess)") from None
    return ray


def check_executor(name: str, address: str | None) -> None:
    """Refuse an unknown executor, a misplaced or malformed Ray address, or Ray missing, before any work."""
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}: use {' or '.join(EXECUTORS)}")
    if address is not None and name != "ray":
        raise ValueError("a Ray address needs the Ray executor: add --executor ray")
    if name == "ray":
        if address is not None:
            host_port(address)
        require_ray()


def host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a HOST:PORT address, None for 'auto'; a ValueError for anything else."""
    if address == "auto":
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"Ray address {address!r} must be auto or HOST:PORT, e.g. 10.0.0.5:6379")
    return host, int(port)


def served_ray_addresses() -> list[str]:
    """The Ray addresses (HOST:PORT or auto) a dashboard's operator offers its users: $ORDERCOMP_RAY_ADDRESSES, comma-separated."""
    return [part.strip() for part in os.environ.get(RAY_ADDRESSES_ENV, "").split(",") if part.strip()]


def check_served_ray_address(address: str | None) -> None:
    """Refuse, before anything connects, a Ray address typed into a served dashboard that its operator does not offer:
    the job would unpickle, so run, whatever the cluster at that address returns. None (a local cluster) passes."""
    offered = served_ray_addresses()
    if address is not None and address not in offered:
        raise ValueError(f"{address} is not a Ray cluster this server's operator offers ({', '.join(offered) or 'none'}): a job runs "
                         "whatever code the cluster there returns; leave the address empty for a local cluster, or ask the operator "
                         f"to list it in ${RAY_ADDRESSES_ENV} (comma-separated HOST:PORT or auto)")


def probe_cluster(address: str | None) -> None:
    """Refuse, in one line and within seconds, a HOST:PORT where no Ray cluster answers, that is not a Ray head's
    GCS port (ray.init retries such a port for minutes), or whose cluster refuses this process's token;
    'auto' and None are left to ray.init."""
    target = None if address is None else host_port(address)
    if target is None:
        return
    try:
        connection = socket.create_connection(target, timeout=CONNECT_TIMEOUT_S)
    except OSError as error:
        raise ValueError(f"no Ray cluster answers at {address} ({error.strerror or error}): start one there with "
                         "`ray start --head --port PORT`, or check --ray-address") from None
    with connection:
        if not speaks_grpc(connection):
            raise ValueError(f"{address} answers but is not a Ray cluster (no gRPC reply within {CONNECT_TIMEOUT_S:.0f} s): "
                             "give the port of the head's GCS (`ray start --head --port PORT`) in --ray-address")
    check_token(address)


def check_token(address: str) -> None:
    """Ask the cluster for its id with Ray's own GCS client, for at most CONNECT_TIMEOUT_S: a token it refuses
    (`ray start --head` turns token authentication on once a token exists on the head) is one line saying
    how to send the right one."""
    try:
        from ray._raylet import InnerGcsClient
        from ray.exceptions import AuthenticationError, RpcError
    except ImportError:  # a Ray without this client: ray.init reports what it finds
        return
    try:
        with native_stderr_silenced():  # Ray's C++ client logs every refused attempt; the outcome is one line below
            InnerGcsClient.standalone(address, None, int(CONNECT_TIMEOUT_S * 1000))
    except AuthenticationError:
        sent = "a token it does not accept" if os.environ.get(RAY_AUTH_MODE) == "token" else f"no token ({RAY_AUTH_MODE} is not token)"
        raise ValueError(f"the Ray cluster at {address} uses token authentication and this process sent {sent}: set "
                         f"{RAY_AUTH_MODE}=token and give it the head's token (`ray get-auth-token` there) in ~/.ray/auth_token, "
                         "RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN") from None
    except RpcError as error:
        raise ValueError(f"{address} answers gRPC but is not a Ray cluster ({_first_line(error)}): give the port of the "
                         "head's GCS (`ray start --head --port PORT`) in --ray-address") from None


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null meanwhile: C++ code writes there directly, past sys.stderr."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def speaks_grpc(connection: socket.socket) -> bool:
    """Whether the server at the other end answers an HTTP/2 client preface with a SETTINGS frame, as every
    gRPC server does at once (a plain TCP or HTTP/1 server does not)."""
    try:
        connection.sendall(HTTP2_PREFACE)
        header = connection.recv(9)
    except OSError:  # no answer within the socket's timeout, or a reset
        return False
    return len(header) > 3 and header[3] == HTTP2_SETTINGS


def start_local_ray(ray, num_cpus: int, **resources) -> None:
    """A local Ray cluster in this process. Its workers run at normal priority: Ray starts them at nice 15,
    so on a busy machine the steps of the exploration the user asked for got a few percent of a core
    (`RAY_worker_niceness` set in the environment still wins). Ray gives its raylet a fixed 30 s to start,
    which a heavily loaded machine can miss; that is reported in one line instead of Ray's traceback. Its workers
    inherit this process's environment, with OpenMP's idle threads spinning briefly (`waiting.spin_briefly`)."""
    os.environ.setdefault(RAY_WORKER_NICENESS, "0")
    spin_briefly()
    try:
        ray.init(num_cpus=num_cpus, **resources, **RAY_OPTIONS)
    except Exception as error:  # Ray reports a start-up timeout as a bare Exception
        ray.shutdown()
        raise ValueError(f"the local Ray cluster did not start ({_first_line(error)}): try again when the machine "
                         "is less busy, start one with `ray start --head` and pass --ray-address auto, or use --executor inprocess") from None


def make_executor(name: str, address: str | None = None, *, device: str = "auto"):
    """The executor an ExploreSpec names."""
    check_executor(name, address)
    return InProcessExecutor() if name == "inprocess" else RayExecutor(address, device=device)


def ray_step(step: Step, parent: nn.Module | None, chain: Chain, seed: int, data: DataBundle, device: str,
             threads: int, keep: bool) -> tuple[nn.Module | None, StepResult]:
    """The body of one Ray task: the step with a fixed thread count; the model (on the CPU, so any
    node can read it) only when a child needs it."""
    torch.set_num_threads(threads)
    keep_freed_memory()
    model, result = step_on(step, parent, chain, seed, data, torch.device(device))
    return (model.cpu() if keep and model is not None else None), result


class RayExecutor:
    """One Ray task per step and seed, each asking for `cpus_per_step` CPUs and, for CUDA, one GPU.
    A child task gets its parent's model as an ObjectRef, so Ray starts it as soon as the prefix is
    done; a task whose worker dies is retried (`max_retries`). Without an address, a local cluster of
    `local_cpus` CPUs is started on the first run and kept for the exploration's later plans (the search
    runs several) until `close`; an already connected Ray session is used as it is and left connected."""

    def __init__(self, address: str | None = None, *, device: str = "auto", cpus_per_step: int = 1, max_retries: int = 3,
                 local_cpus: int | None = None):
        self.address, self.device, self.cpus_per_step = address, device, cpus_per_step
        self.max_retries, self.local_cpus = max_retries, local_cpus
        self._started = False  # this executor connected the session, so `close` shuts it down

    def run(self, work: Work, plan: list[Chain], seeds: Sequence[int]) -> list[StepResult]:
        ray = self._session()
        gpus = self._gpus_per_step(ray)
        work.events({"kind": "stage", "stage": "ray", "label": self._describe(ray, gpus)})
        return RayRun(ray, work, self._task(ray, gpus), "cuda" if gpus else "cpu", self.cpus_per_step).run(plan, seeds)

    def step_device(self, device: torch.device) -> str:
        """The type of device the steps run on (part of their cache key): the cluster's GPUs when it has
        them and the spec allows, whatever the driver's own device."""
        return "cuda" if self._gpus_per_step(self._session()) else "cpu"

    def close(self) -> None:
        """Shut down the session this executor started (a cluster it joined keeps running)."""
        if self._started:
            require_ray().shutdown()
            self._started = False

    def _session(self):
        """The ray module, connected (a local cluster is started the first time when there is no address)."""
        ray = require_ray()
        self._started |= self._connect(ray)
        return ray

    def _connect(self, ray) -> bool:
        """Connect (True when this call started the session and must shut it down)."""
        if ray.is_initialized():
            return False
        if self.address is None:
            start_local_ray(ray, self.local_cpus or os.cpu_count())
            return True
        probe_cluster(self.address)
        try:
            ray.init(address=self.address, **RAY_OPTIONS)
        except (ConnectionError, RuntimeError, TimeoutError) as error:
            raise ValueError(f"could not connect to the Ray cluster at {self.address}: {_first_line(error)}; "
                             "start one with `ray start --head` or check --ray-address") from None
        return True

    def _gpus_per_step(self, ray) -> int:
        """1 for CUDA steps, 0 for CPU steps; a ValueError when the cluster cannot serve the request."""
        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        if max((node.get("CPU", 0) for node in nodes), default=0) < self.cpus_per_step:
            raise ValueError(f"no node of the Ray cluster has {self.cpus_per_step} CPUs for one step: ask for fewer CPUs per step")
        has_gpu = any(node.get("GPU", 0) >= 1 for node in nodes)
        if self.device == "cuda" and not has_gpu:
            raise ValueError("device cuda was asked for but the Ray cluster has no GPU: use --device cpu or auto, "
                             "or add a GPU node with `ray start --address=HEAD:PORT --num-gpus=1`")
        return int(has_gpu and self.device != "cpu")

    def _describe(self, ray, gpus: int) -> str:
        resources = ray.cluster_resources()
        return (f"running steps on Ray: {int(resources.get('CPU', 0))} CPUs, {int(resources.get('GPU', 0))} GPUs; "
                f"{self.cpus_per_step} CPU{'s' if self.cpus_per_step > 1 else ''}{' + 1 GPU' if gpus else ''} per step")

    def _task(self, ray, gpus: int):
        return ray.remote(ray_step).options(num_cpus=self.cpus_per_step, num_gpus=gpus, num_returns=2,
                                            max_retries=self.max_retries, retry_exceptions=False)


class RayRun:
    """The tasks of one plan on a connected Ray session, and the driver loop that collects them."""

    def __init__(self, ray, work: Work, task, device: str, threads: int):
        self.ray, self.work, self.task, self.device, self.threads = ray, work, task, device, threads
        self.submitted: list = []

    def run(self, plan: list[Chain], seeds: Sequence[int]) -> list[StepResult]:
        results: dict[tuple[Chain, int], StepResult] = {}
        pending: dict = {}
        total = len(plan) * len(seeds)
        for module in user_modules():  # a worker cannot import a user's file: its classes travel with the model
            self.ray.cloudpickle.register_pickle_by_value(module)
        data = self.ray.put(self.work.data)
        base = self.ray.put(copy.deepcopy(self.work.base).cpu())
        try:
            for seed in seeds:
                cached = {chain: self.work.cache.get(self.work.key(chain, seed)) for chain in plan}
                for chain in plan:
                    if cached[chain] is not None:
                        results[(chain, seed)] = cached[chain]
                        self.work.events(step_event(cached[chain], len(results), total, cached=True))
                pending |= self._submit(plan, seed, cached, base, data)
            del base, data
            self._collect(pending, results, total)
        except BaseException:
            self._cancel()
            raise
        return [results[(chain, seed)] for seed in seeds for chain in plan]

    def _submit(self, plan: list[Chain], seed: int, cached: dict, base, data) -> dict:
        """A task for every step to compute and every prefix it needs; {result ref: (chain, seed)} of those to record."""
        needed = parents_in([chain for chain in plan if cached[chain] is None]) | {c for c in plan if cached[c] is None}
        needed.discard(())
        parents, models, pending = parents_in(list(needed)), {(): base}, {}
        for chain in sorted(needed, key=len):
            keep = chain in parents
            model, result = self.task.remote(self.work.step, models[chain[:-1]], chain, seed, data, self.device, self.threads, keep)
            self.submitted.append(result)
            if keep:
                models[chain] = model
            if chain in cached and cached[chain] is None:
                pending[result] = (chain, seed)
        return pending

    def _collect(self, pending: dict, results: dict, total: int) -> None:
        """Record results as tasks finish; between them, a progress event (which may raise to cancel)."""
        while pending:
            ready, _ = self.ray.wait(list(pending), num_returns=1, timeout=RAY_POLL_S)
            if not ready:
                self.work.events({"kind": "progress", "label": f"{len(pending)} steps queued or running on Ray",
                                  "fraction": len(results) / total})
                continue
            chain, seed = pending.pop(ready[0])
            result = self.ray.get(ready[0])
            self.work.cache.put(self.work.key(chain, seed), result)
            results[(chain, seed)] = result
            self.work.events(step_event(result, len(results), total))

    def _cancel(self) -> None:
        """Stop every task not finished yet (cancelling a finished one does nothing)."""
        for ref in self.submitted:
            self.ray.cancel(ref, force=True)


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__

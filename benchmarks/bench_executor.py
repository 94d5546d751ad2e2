"""Wall time of one exploration run by the in-process executor and by the Ray executor, same spec,
fresh caches, and whether both found the same step results and chain.

    .venv/bin/python benchmarks/bench_executor.py                       # the embedded default (3 seeds, 3 epochs)
    .venv/bin/python benchmarks/bench_executor.py --seeds 1 --epochs 1   # quicker
    .venv/bin/python benchmarks/bench_executor.py --data PATH --model resnet18_small_input --input-size 32 --device cuda --batch-size 1024

In-process steps run with `--threads` torch threads (1, the thread count of a 1-CPU Ray task, so the
results match bit for bit); Ray starts a local cluster of all this machine's CPUs inside the timed
run and runs one step per CPU at a time, or joins `--ray-address`.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from ordercomp.exploration.explorer import ExploreSpec, explore
from ordercomp.train import Budget

CUDA_COMMAND = ("python benchmarks/make_cifar_folder.py /tmp/cifar-like && python benchmarks/bench_executor.py "
                "--data /tmp/cifar-like --model resnet18_small_input --input-size 32 --device cuda "
                "--methods distill,prune,quantize,early_exit --seeds 3 --epochs 1 --batch-size 1024")


def timed(spec: ExploreSpec) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        record = explore(spec, cache_dir=cache).to_dict()
        return time.perf_counter() - start, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--input-size", type=int)
    parser.add_argument("--methods", default="distill,prune,quantize,early_exit")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=float, default=Budget.epochs)
    parser.add_argument("--batch-size", type=int, default=Budget.batch_size)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the in-process run")
    parser.add_argument("--ray-address", help="join this cluster instead of starting a local one")
    args = parser.parse_args()
    spec = dict(model=args.model, data=args.data, input_size=args.input_size, methods=tuple(args.methods.split(",")),
                seeds=args.seeds, budget=Budget(epochs=args.epochs, batch_size=args.batch_size), device=args.device)
    torch.set_num_threads(args.threads)
    local_s, local = timed(ExploreSpec(**spec))
    ray_s, remote = timed(ExploreSpec(**spec, executor="ray", ray_address=args.ray_address))
    steps = len(local["steps"])
    same_steps = [s["metrics"] for s in local["steps"]] == [s["metrics"] for s in remote["steps"]]
    print(f"exploration: {args.model} on {args.data}, {len(spec['methods'])} methods, {args.seeds} seeds, "
          f"{args.epochs:g} epochs, {steps} steps, device {args.device}, this machine: {os.cpu_count()} CPUs")
    print(f"in-process ({args.threads} thread{'s' if args.threads > 1 else ''}) {local_s:8.1f} s   chain {' -> '.join(local['chain'])}")
    print(f"ray ({args.ray_address or f'local cluster, {os.cpu_count()} CPUs'}, started in the run) {ray_s:8.1f} s   "
          f"chain {' -> '.join(remote['chain'])}")
    print(f"ray / in-process: {ray_s / local_s:.2f}x; same chain: {local['chain'] == remote['chain']}; "
          f"same step results: {same_steps}")
    if not torch.cuda.is_available():
        print(f"CUDA at CIFAR scale: unmeasured (no GPU on this machine); on one, run: {CUDA_COMMAND}")


if __name__ == "__main__":
    main()

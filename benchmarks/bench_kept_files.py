"""What keeping exported files saves: an exploration run twice on one step cache (the second run takes every step
from the cache, as after a reload or a changed objective weight), with the ONNX files kept (deploy/kept_files.py)
and with them written again, in alternating order so that neither pays the process's first-run costs alone.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_kept_files.py [--models cnn_tiny,digits32_vit]

Prints, per model, the seconds of the first run and of the rerun in both modes, and the rerun's ratio.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from ordercomp.deploy import kept_files
from ordercomp.deploy.runtimes import cpu_description
from ordercomp.exploration.explorer import Explorer, ExploreSpec
from ordercomp.train import Budget

SPECS = {  # two methods, one seed, a tenth of an epoch: the shipping is what is timed, not the training
    "cnn_tiny": dict(methods=("prune", "quantize"), budget=Budget(epochs=0.1)),
    "digits32_vit": dict(methods=("quantize", "token_merge"), budget=Budget(epochs=0.1, lr=2e-4)),
}


def first_and_rerun(model: str, kept: bool) -> list[float]:
    kept_files.KEPT_FORMATS = ("onnx", "onnx_int8") if kept else ()
    spec = ExploreSpec(model=model, seeds=1, search="pairwise", device="cpu", ship="onnx", **SPECS[model])
    seconds = []
    with tempfile.TemporaryDirectory() as cache:
        for _ in range(2):
            start = time.perf_counter()
            Explorer(spec, cache_dir=cache).explore()
            seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SPECS))
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    for model in args.models.split(","):
        runs = {kept: first_and_rerun(model, kept) for kept in (False, True)}  # not kept first: it pays the warm-up
        for kept, (first, rerun) in runs.items():
            print(f"{model}: files {'kept' if kept else 'written again'}: first run {first:.1f} s, rerun {rerun:.1f} s")
        print(f"{model}: rerun {runs[False][1] / runs[True][1]:.1f}x faster with the files kept")


if __name__ == "__main__":
    main()

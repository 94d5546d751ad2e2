"""Apply a chain of compression methods to a copy of a model, one step at a time.

Each step is applied by its registered method (which copies its input), measured, and reported
through a callback, so a CLI, a worker process or a test can follow progress step by step.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from typing import Callable

import torch
from torch import nn

from ..deploy.runtimes import load_average, machine_load
from ..errors import one_line
from ..methods.base import Context, Incompatible
from ..methods.registry import get_method
from ..metrics import measure

OK, INCOMPATIBLE, FAILED = "ok", "incompatible", "failed"


@dataclass
class StepResult:
    """The outcome of applying the last method of `chain` to the model the earlier ones made.
    `fidelity` is the fraction of the fine-tuning epochs the step had: 1 for the full budget, less
    for a screening step (`--screen`). `load` is how busy the machine was while the step was timed
    (`runtimes.machine_load`), for `figures.busy_caveat`; None for an untimed step, or one cached before loads were kept."""

    chain: tuple[str, ...]
    status: str
    reason: str | None = None
    metrics: dict | None = None
    seconds: float = 0.0
    seed: int = 0
    fidelity: float = 1.0
    load: dict | None = None

    def to_dict(self) -> dict:
        record = asdict(self)
        record["chain"] = list(self.chain)
        return record

    @classmethod
    def from_dict(cls, record: dict) -> "StepResult":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known} | {"chain": tuple(record["chain"])})


def make_configs(methods, overrides: dict[str, dict] | None = None) -> dict:
    """A validated config for every method: its defaults with the given field overrides."""
    overrides = overrides or {}
    unknown = set(overrides) - set(methods)
    if unknown:
        raise ValueError(f"settings given for {', '.join(sorted(unknown))}, which is not among the chosen methods")
    return {name: get_method(name).make_config(**overrides.get(name, {})) for name in methods}


def apply_step(model: nn.Module, method: str, config, context: Context) -> nn.Module:
    return get_method(method).apply(model, config, context)


def run_step(model: nn.Module, chain: tuple[str, ...], configs: dict, context: Context, *,
             split: str = "val", latency: bool = False) -> tuple[nn.Module | None, StepResult]:
    """Apply chain[-1] to `model` and measure it; incompatibility and any error (an Exception: not an interrupt
    nor a cancel) become results, so one step never ends an exploration.
    The global RNG (new layers' initial weights) is seeded with the step's seed, so the result does not
    depend on what ran before in this process: any executor's worker gives the same one."""
    start = time.perf_counter()
    torch.manual_seed(context.seed)
    try:
        compressed = apply_step(model, chain[-1], configs[chain[-1]], context)
        check_logits(compressed, chain[-1], context)
        load_start = load_average() if latency else None
        metrics = measure(compressed, context.data, split, device=context.device, latency=latency).to_dict()
    except Incompatible as reason:
        return None, StepResult(chain, INCOMPATIBLE, str(reason), seconds=time.perf_counter() - start, seed=context.seed)
    except Exception as error:  # whatever a method raises (Torch-Pruning, torchao, a shape it did not expect) fails this step only
        return None, StepResult(chain, FAILED, one_line(error), seconds=time.perf_counter() - start, seed=context.seed)
    return compressed, StepResult(chain, OK, None, metrics, time.perf_counter() - start, context.seed,
                                  load=machine_load(load_start) if latency else None)


@torch.no_grad()
def check_logits(model: nn.Module, method: str, context: Context) -> None:
    """A method must leave one logit per class: a classifier that lost outputs fails the step."""
    example = context.data.example_input(2).to(context.device)
    classes = model.eval()(example).shape[-1]
    if classes != context.data.num_classes:
        raise RuntimeError(f"{method} changed the model's outputs from {context.data.num_classes} logits to {classes}")


def apply_chain(model: nn.Module, chain: list[str], configs: dict, context: Context, *, split: str = "test",
                latency: bool = True, on_step: Callable[[StepResult], None] | None = None) -> tuple[nn.Module, list[StepResult]]:
    """Apply every method of `chain` in order; stop at the first step that cannot apply."""
    results, current = [], model
    for index in range(len(chain)):
        prefix = tuple(chain[: index + 1])
        compressed, result = run_step(current, prefix, configs, context, split=split, latency=latency)
        results.append(result)
        if on_step:
            on_step(result)
        if compressed is None:
            break
        current = compressed
    return current, results

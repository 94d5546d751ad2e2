"""How many method applications an exploration takes and about how long: from the finished steps
in the job store, from a sample model's size, or a default guess."""
from __future__ import annotations

DEFAULT_STEP_SECONDS = 20.0      # per method application, until the store has finished steps to go by
# Seconds per multiply-accumulate of fine-tuning on 2 CPU cores (forward + backward ~ 3x the MACs), with each
# step's measurement: digits_cnn on digits, 100 applications at 3 epochs in 148 s (benchmarks/bench_explore.py).
CPU_SECONDS_PER_MAC = 5.3e-11


def plan_cost(spec, mean_seconds: float | None) -> dict:
    """Method applications of an exploration and an estimate of its time."""
    from .. import order

    n = len(spec.methods)
    pairwise, exhaustive = order.pairwise_applications(n), order.exhaustive_applications(n)
    if spec.exhaustive or spec.search == "exhaustive":
        per_seed = exhaustive
    else:  # the search spends at most its budget (whole orders around the pairwise plan), never more than every order
        per_seed = pairwise if spec.search == "pairwise" else min(order.search_budget(n, spec.search), exhaustive)
    applications = per_seed * spec.seeds + n  # + the chain applied once to the base on the test split
    guess = sample_step_seconds(spec)
    each = mean_seconds or guess or DEFAULT_STEP_SECONDS
    basis = "measured" if mean_seconds else ("sample" if guess else "default")
    return {"pairwise_per_seed": pairwise, "exhaustive_per_seed": exhaustive, "per_seed": per_seed, "seeds": spec.seeds,
            "applications": applications, "seconds_each": each, "basis": basis, "seconds": applications * each}


def sample_step_seconds(spec) -> float | None:
    """Seconds per application of a sample model on its own data, from its card's MACs and training
    images; None for other models or data."""
    from ..models.checkpoints import list_samples, sample_card

    if spec.model not in list_samples() or spec.data != "digits":
        return None
    card = sample_card(spec.model)
    work = card["metrics"]["macs"] * card["data"]["train"] * spec.budget.epochs * 3
    return max(0.2, work * CPU_SECONDS_PER_MAC)

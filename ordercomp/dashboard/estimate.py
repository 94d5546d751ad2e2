"""How many method applications an exploration takes and about how long: from the finished steps
in the job store, from a sample model's size, or a default guess."""
from __future__ import annotations

DEFAULT_STEP_SECONDS = 20.0      # per method application, until the store has finished steps to go by
# Seconds per multiply-accumulate of fine-tuning on 2 CPU cores (forward + backward ~ 3x the MACs), with each
# step's measurement: digits_cnn on digits, 100 applications at 3 epochs in 148 s (benchmarks/bench_explore.py).
CPU_SECONDS_PER_MAC = 5.3e-11


def plan_cost(spec, mean_seconds: float | None) -> dict:
    """Method applications of an exploration (at most: the search, its race of the contenders on extra seeds,
    a screen's confirmation) and an estimate of its time, a screened application counting its fraction of the epochs."""
    from .. import order

    n = len(spec.methods)
    pairwise, exhaustive = order.pairwise_applications(n), order.exhaustive_applications(n)
    planned = order.recommend.planned_applications(n, spec.seeds, spec.search, spec.screen)
    per_seed, searched = planned["per_seed"], planned["per_seed"] * spec.seeds
    beyond = planned["total"] - searched  # extra seeds of the race; with a screen, the full-budget confirmation too
    total, cost = planned["total"], planned["cost"]
    if spec.exhaustive:  # every order on the spec's seeds; an unscreened search's orders are among them
        per_seed = exhaustive
        total, cost = (exhaustive * spec.seeds + beyond,) * 2 if spec.screen is None else \
            (exhaustive * spec.seeds + total, exhaustive * spec.seeds + cost)
    applications = total + n  # + the chain applied once to the base on the test split
    guess = sample_step_seconds(spec)
    each = mean_seconds or guess or DEFAULT_STEP_SECONDS
    basis = "measured" if mean_seconds else ("sample" if guess else "default")
    return {"pairwise_per_seed": pairwise, "exhaustive_per_seed": exhaustive, "per_seed": per_seed, "beyond": beyond,
            "seeds": spec.seeds, "applications": applications, "seconds_each": each, "basis": basis,
            "seconds": (cost + n) * each}


def sample_step_seconds(spec) -> float | None:
    """Seconds per application of a sample model on its own data, from its card's MACs and training
    images; None for other models or data."""
    from ..models.checkpoints import list_samples, sample_card

    if spec.model not in list_samples() or spec.data != "digits":
        return None
    card = sample_card(spec.model)
    work = card["metrics"]["macs"] * card["data"]["train"] * spec.budget.epochs * 3
    return max(0.2, work * CPU_SECONDS_PER_MAC)

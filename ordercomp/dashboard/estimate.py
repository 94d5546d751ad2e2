"""How many method applications an exploration takes and about how long: from the steps measured on
this machine (the job store's finished steps of the same model and data), else a guess from the base's
size (its baseline measured here, or a sample's card), else a default guess; the text says which."""
from __future__ import annotations

from ..report.figures import duration, plural

DEFAULT_STEP_SECONDS = 20.0      # per method application, until the store has finished steps to go by
# Seconds per multiply-accumulate of fine-tuning on 2 CPU cores (forward + backward ~ 3x the MACs), with each
# step's measurement: digits_cnn on digits, 100 applications at 3 epochs in 148 s (benchmarks/bench_explore.py).
CPU_SECONDS_PER_MAC = 5.3e-11


def plan_cost(spec, measured: tuple[float, int] | None, baseline: dict | None = None) -> dict:
    """Method applications of an exploration (`ExploreSpec.planned_applications`) and an estimate of its time, a
    screened application counting its fraction of the epochs; `measured` is (mean seconds, steps) of this model and
    data from the job store (`JobStore.step_seconds`), `baseline` the result of this base's finished baseline job."""
    planned = spec.planned_applications()
    guess = sample_step_seconds(spec)
    if measured:
        each, basis = measured[0], f"from {measured[1]} steps measured here"
    elif baseline:
        each, basis = size_step_seconds(baseline, spec.budget.epochs), ("a guess from the base's size and training "
                                                                         "images, measured here (no step of it yet)")
    elif guess:
        each, basis = guess, "a guess from the sample's size (no step of it measured here yet)"
    else:
        each, basis = DEFAULT_STEP_SECONDS, "a default guess (no step of this model and data measured here yet)"
    return planned | {"applications": planned["total"], "seconds_each": each, "basis": basis,
                      "seconds": planned["cost"] * each}


def estimate_text(cost: dict) -> str:
    """'about 3 min, from 96 steps measured here': the one wording of the time estimate on every page."""
    return f"about {duration(cost['seconds'])}, {cost['basis']}"


def applications_text(spec, cost: dict) -> str:
    """Where the Methods page's count of applications goes: per seed (a one-seed search: on the first seed and on
    each other), after the search, and the chain."""
    label = "exhaustive" if spec.exhaustive else spec.search
    if _searches_one_seed(spec, cost):
        others = spec.seeds - 1
        runs = (f"at most {cost['per_seed']} on the first seed and the pairwise plan's {cost['pairwise_per_seed']} on "
                f"{'the other seed' if others == 1 else f'each of the {others} others'}")
    else:
        runs = f"at most {cost['per_seed']} per seed × {plural(spec.seeds, 'seed')}"
    settle = f", up to {cost['settle']} more to settle an open choice on more seeds" if cost.get("settle") else ""
    return f"{label}: {runs}{_beyond_text(spec, cost)}{settle}, + {len(spec.methods)} to apply the chain"


def _beyond_text(spec, cost: dict) -> str:
    """What the applications after the search are for (a screen's or a one-seed search's confirmation, the race's
    extra seeds); '' when there are none."""
    beyond = cost["beyond"]
    if not beyond:
        return ""
    if spec.screen is not None:
        return f", up to {beyond} to confirm the best orders at the full budget and race them on extra seeds"
    if _searches_one_seed(spec, cost):
        return f", up to {beyond} to measure the search's best orders on the other seeds and race them on extra seeds"
    return f", up to {beyond} on extra seeds for the orders still in contention"


def _searches_one_seed(spec, cost: dict) -> bool:
    return cost.get("search_seeds", spec.seeds) < spec.seeds


def sample_step_seconds(spec) -> float | None:
    """Seconds per application of a sample model on its own data, from its card's MACs and training
    images; None for other models or data."""
    from ..models.checkpoints import list_samples, sample_card

    if spec.model not in list_samples() or spec.data != "digits":
        return None
    return size_step_seconds(sample_card(spec.model), spec.budget.epochs)


def size_step_seconds(measured: dict, epochs: float) -> float:
    """Seconds per application of a model measured as `measured` says (a sample's card or a baseline job's result:
    its MACs per image and training images), fine-tuned for `epochs`."""
    work = measured["metrics"]["macs"] * measured["data"]["train"] * epochs * 3
    return max(0.2, work * CPU_SECONDS_PER_MAC)

"""A small hand-made exploration record, as ordercomp writes one, for tests of what is drawn or written from a record.

Four methods: prune → quantize → early_exit → int8 is the chain, early_exit → prune was dropped to break a cycle,
early_exit → int8 is weak, prune / int8 is a tie and quantize / int8 is incompatible.
"""
from __future__ import annotations

METHODS = ["prune", "quantize", "early_exit", "int8"]
CHAIN = ["prune", "quantize", "early_exit", "int8"]
BASE = {"accuracy": 98.0, "params": 20000, "size_bytes": 80000.0, "macs": 1e6, "bitops": 1.024e9, "latency_ms_b1": 0.4,
        "latency_ms_batch": 2.0, "peak_memory_bytes": 1e6, "exit_fractions": None}


def metrics(chain, seed=0, latency=None) -> dict:
    """Each method halves the BitOps and costs one accuracy point; seed 1 scores one point more."""
    n = len(chain)
    return BASE | {"accuracy": 98.0 - n + seed, "bitops": BASE["bitops"] / 2 ** n, "size_bytes": BASE["size_bytes"] / 2 ** n,
                   "latency_ms_b1": latency, "latency_ms_batch": None, "peak_memory_bytes": None}


def step(chain, seed=0, status="ok", latency=None) -> dict:
    return {"chain": list(chain), "status": status, "reason": None if status == "ok" else "already quantised below 8 bits",
            "metrics": metrics(chain, seed, latency) if status == "ok" else None, "seconds": 0.5, "seed": seed}


def outcome(first, second, mean_diff, *, winner=None, tie=False, weak=False, incompatible=None) -> dict:
    return {"first": first, "second": second, "scores_first_then_second": [90.0, 91.0], "scores_second_then_first": [89.0, 90.0],
            "higher_is_better": True, "mean_diff": mean_diff, "spread": 0.5, "winner": winner, "tie": tie,
            "weak_evidence": weak, "incompatible": incompatible}


def synthetic_record(*, latency=True) -> dict:
    singles = [(m,) for m in METHODS]
    pairs = [(a, b) for a in METHODS for b in METHODS if a != b]
    steps = [step(c, seed, "incompatible" if c == ("quantize", "int8") else "ok") for seed in (0, 1) for c in singles + pairs]
    chain_steps = [step(CHAIN[: i + 1], latency=0.1 * (4 - i) if latency else None) for i in range(len(CHAIN))]
    return {
        "spec": {"model": "cnn_tiny", "data": "digits", "methods": METHODS, "settings": {}, "objective": "accuracy", "weight": 1.0,
                 "seeds": 2, "budget": {"epochs": 0.3, "lr": 0.002, "batch_size": 64, "weight_decay": 0.0}, "device": "cpu",
                 "exhaustive": True, "repeat": None, "min_margin": 0.5, "architecture": None, "input_size": None, "min_methods": 2},
        "base": {"source": "trained", "architecture": "cnn_tiny", "fingerprint": "0123456789abcdef"},
        "base_metrics": BASE | {"latency_ms_b1": 0.4 if latency else None},
        "steps": steps,
        "outcomes": [outcome("prune", "quantize", 2.0, winner="prune"), outcome("prune", "early_exit", -0.8, winner="early_exit"),
                     outcome("prune", "int8", 0.1, tie=True), outcome("quantize", "early_exit", 3.0, winner="quantize"),
                     outcome("quantize", "int8", 0.0, incompatible="quantize → int8: already quantised below 8 bits"),
                     outcome("early_exit", "int8", 1.5, winner="early_exit", weak=True)],
        "edges": [{"before": "prune", "after": "quantize", "margin": 2.0, "spread": 0.5, "weak": False},
                  {"before": "quantize", "after": "early_exit", "margin": 3.0, "spread": 0.5, "weak": False},
                  {"before": "early_exit", "after": "int8", "margin": 1.5, "spread": 0.5, "weak": True}],
        "dropped_edges": [{"before": "early_exit", "after": "prune", "margin": 0.8}],
        "valid_chains": [CHAIN], "chain": CHAIN, "chain_steps": chain_steps,
        "applications": {"methods": 4, "seeds": 2, "pairwise_per_seed": 16, "exhaustive_per_seed": 64,
                         "naive_exhaustive_per_seed": 88, "cache_hits": 0},
        "exhaustive": {"orders": [{"chain": CHAIN, "score": 95.0}, {"chain": ["quantize", "prune", "early_exit", "int8"], "score": 94.0}],
                       "rank": 1, "of": 2, "applications_pairwise": 32, "applications_exhaustive": 128, "cost_ratio": 4.0},
        "repeat": None, "weak_pairs": 1, "seconds": 12.0,
        "configs": {"prune": {"method": "prune", "version": 1, "ratio": 0.5, "importance": "l2"},
                    "quantize": {"method": "quantize", "version": 1, "weight_bits": 8, "act_bits": 8},
                    "early_exit": {"method": "early_exit", "version": 1, "threshold": 0.9, "head_lr": 0.05},
                    "int8": {"method": "int8", "version": 1, "calibration_batches": 8}},
    }

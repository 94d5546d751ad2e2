"""Order search checked against exhaustive ground truth, on the settings of `search_settings.py`.

For every setting, every order of its methods is run on the same seeds (prefixes shared, results
cached in --cache, so a rerun only re-reads them); then each search strategy is run on the same
cache and judged against that ground truth. Printed per setting and strategy: the chain, its rank
among the orders, its regret (the best order's mean score minus the chain's, in the objective's
points), Kendall's tau between the ranking the pair decisions imply and the exhaustive ranking, the
method applications it spent over all seeds (the race's extra seeds included) and, for the
strategies that evaluate whole orders, the probability it claims that its order is the best of those
it evaluated, whether it truly is (by the ground truth), and the orders it could not separate it from.

Then, with --fresh-seeds N (8 unless 0), the ground truth is checked where it is weakest: the best of many
orders on a few seeds is high partly by luck (with 720 orders on 2 seeds, by several points), so the orders
it cannot tell from its best (within two standard errors of a difference, pooled over the setting's orders;
at most FRESH_CONTENDERS) and every strategy's chain run again on N fresh seeds (from FRESH_FROM, above
every seed a search or its race uses), and each strategy's fresh regret is the best fresh mean minus its
chain's, against the standard error of that best order's fresh mean. The selection on the ground truth's
seeds and the race's seeds then cannot flatter any order.

With --settles, the default strategy also runs allowed each of those applications to settle an open choice
on more seeds (ordercomp.order.recommend: step 5), judged the same way, fresh seeds included.

With --screens, the default strategy also runs with --screen at each fraction of the fine-tuning
epochs: its regret, its cost in full-budget applications, and Kendall's tau between the cheap and the
full scores of the orders its screen evaluated (the full ones from the ground truth).

Last, a real A/A run: every pair order of the default setting on seeds 0-2 against the same order on
seeds 3-5, judged by the pair decision and by the race's elimination test; a calibrated rule drops
(almost) none.

    .venv/bin/python benchmarks/bench_search.py                       # every setting
    .venv/bin/python benchmarks/bench_search.py --settings default    # some of them
    .venv/bin/python benchmarks/bench_search.py --cache /tmp/bench-search-cache --screens 0.25,0.5
    .venv/bin/python benchmarks/bench_search.py --settings cnn-six --fresh-seeds 8 --screens '' --no-aa
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from search_settings import SETTINGS, setting_spec  # noqa: E402

from ordercomp import order  # noqa: E402
from ordercomp.exploration.explorer import SEARCHES, Explorer, ranked_orders  # noqa: E402
from ordercomp.order import OBJECTIVES  # noqa: E402
from ordercomp.order.race import Trial, eliminated  # noqa: E402
from ordercomp.report.verdict import choice_is_open  # noqa: E402

CACHE = Path(".ordercomp/bench-search-cache")
DEFAULT = order.DEFAULT_STRATEGY
FRESH_FROM = 100  # the fresh seeds' first: above the ground truth's and every race's extra seeds
FRESH_CONTENDERS = 8  # at most this many of the ground truth's best orders are run again on the fresh seeds


def run_orders(explorer: Explorer, plan: list, base=None, seeds=None) -> list:
    """The steps of `plan` (prefixes of whole orders) on the setting's seeds or `seeds`, from the cache where it holds them."""
    base = explorer.load_base()[0] if base is None else base
    explorer.measure_base(base)
    explorer._deepest = len(explorer.spec.methods)
    return explorer.run_plan(base, plan, seeds=seeds)


def exhaustive_steps(explorer: Explorer, base=None) -> list:
    """Every prefix of every order on the setting's seeds."""
    return run_orders(explorer, order.exhaustive_plan(explorer.spec.methods), base)


def ground_truth(explorer: Explorer, base) -> tuple[list[dict], list]:
    """Every full order with its mean score over the seeds, best first, and the full orders' step results."""
    steps = exhaustive_steps(explorer, base)
    full = [s for s in steps if len(s.chain) == len(explorer.spec.methods)]
    return ranked_orders(full, explorer._score_of, OBJECTIVES[explorer.spec.objective][0]), full


def describe_orders(explorer: Explorer, truth: list[dict], full: list) -> str:
    """The orders' BitOps reduction and accuracy ranges, and where ranking by accuracy alone would go."""
    def mean(chain, key):
        return statistics.fmean(s.metrics[key] for s in full if list(s.chain) == chain)
    reduction = [explorer._base["bitops"] / mean(o["chain"], "bitops") for o in truth]
    accuracy = [mean(o["chain"], "accuracy") for o in truth]
    by_accuracy = max(range(len(truth)), key=accuracy.__getitem__)
    return (f"BitOps {min(reduction):.0f}x-{max(reduction):.0f}x fewer, validation accuracy {min(accuracy):.2f}-{max(accuracy):.2f} %; "
            f"accuracy alone picks {' -> '.join(truth[by_accuracy]['chain'])} ({accuracy[by_accuracy]:.2f} % at "
            f"{reduction[by_accuracy]:.0f}x), rank {by_accuracy + 1} by {explorer.spec.objective}")


def judge(name: str, strategy: str, truth: list[dict], cache: Path, screen: float | None = None, settle: int = 0) -> dict:
    """Run `strategy` (with `screen` or `settle`, if given) on the cached steps of setting `name` and compare its chain
    with the truth."""
    explorer = Explorer(setting_spec(name, search=strategy, screen=screen, settle=settle), cache_dir=cache)
    base, _ = explorer.load_base()
    found = explorer.find_order(base)
    scores = {tuple(o["chain"]): o["score"] for o in truth}
    chosen = scores.get(tuple(found.chain))
    rank = [tuple(o["chain"]) for o in truth].index(tuple(found.chain)) + 1 if chosen is not None else None
    implied = order.pairwise_ranking(list(explorer.spec.methods), found.outcomes)
    tau = order.kendall_tau({c: implied[c] for c in scores}, scores) if len(scores) > 1 else None
    search = found.search
    verdict = search.get("verdict") or {}
    evaluated = [tuple(o["chain"]) for o in search["orders"] if tuple(o["chain"]) in scores]
    higher = OBJECTIVES[explorer.spec.objective][0]
    truly = max(evaluated, key=lambda c: scores[c] if higher else -scores[c]) if evaluated else None
    spent = search.get("applications") or {}
    return {"setting": name, "strategy": strategy, "screen": screen, "settle": settle, "order": tuple(found.chain), "rank": rank,
            "of": len(truth), "regret": None if chosen is None else abs(truth[0]["score"] - chosen), "best_se": truth[0]["se"],
            "tau": tau, "applications": spent.get("total", search["applications_per_seed"] * explorer.spec.seeds),
            "cost": spent.get("cost", search["applications_per_seed"] * explorer.spec.seeds),
            "pairwise_total": order.pairwise_applications(len(explorer.spec.methods)) * explorer.spec.seeds,
            "probability": verdict.get("probability"), "truly_best_of_evaluated": truly == tuple(found.chain),
            "separated": verdict.get("separated"), "inseparable": len(verdict.get("inseparable", [])),
            "open": choice_is_open(verdict or None),
            "screen_tau": screen_tau(search, scores) if screen else None}


def contenders(truth: list[dict], limit: int = FRESH_CONTENDERS) -> list[tuple]:
    """The ground truth's orders it cannot tell from its best: within two standard errors of a difference of two
    means, the seed-to-seed sd pooled over every order (one order's own, from 2 or 3 seeds, is too rough), best first."""
    seeds = truth[0]["seeds"]
    if seeds < 2:
        return [tuple(truth[0]["chain"])]
    pooled_sd = statistics.fmean(o["se"] ** 2 * o["seeds"] for o in truth) ** 0.5
    margin = 2 * pooled_sd * (2 / seeds) ** 0.5
    return [tuple(o["chain"]) for o in truth if abs(truth[0]["score"] - o["score"]) <= margin][:limit]


def fresh_regrets(name: str, cache: Path, truth: list[dict], rows: list[dict], seeds: int) -> list[dict]:
    """The contenders and every row's chain on `seeds` fresh seeds; the fresh means best first, and each row gains
    its fresh regret (the best fresh mean minus its chain's), that best order's fresh standard error, and the
    standard error of the regret itself (the two orders' differences paired per seed)."""
    explorer = Explorer(setting_spec(name), cache_dir=cache)
    chains = list(dict.fromkeys(contenders(truth) + [row["order"] for row in rows if row["rank"]]))
    fresh, steps = on_fresh_seeds(explorer, chains, seeds)
    higher = OBJECTIVES[explorer.spec.objective][0]
    ran = {tuple(o["chain"]) for o in fresh}  # every fresh seed applied
    score = {(s.chain, s.seed): explorer._score_of(s) for s in steps if s.chain in ran}
    best = tuple(fresh[0]["chain"])
    for row in rows:
        gaps = [(score[best, seed] - score[row["order"], seed]) * (1 if higher else -1)
                for seed in range(FRESH_FROM, FRESH_FROM + seeds)] if row["order"] in ran else []
        row["fresh_regret"] = statistics.fmean(gaps) if gaps else None
        row["fresh_best_se"] = fresh[0]["se"]
        row["fresh_paired_se"] = statistics.stdev(gaps) / len(gaps) ** 0.5 if len(gaps) > 1 else None
    return fresh


def on_fresh_seeds(explorer: Explorer, chains: list[tuple], seeds: int, base=None) -> tuple[list[dict], list]:
    """`chains` (whole orders, their prefixes shared) on `seeds` fresh seeds from FRESH_FROM: those that applied on every
    one with their fresh mean and standard error, best first, and the steps run."""
    plan = list(dict.fromkeys(prefix for chain in chains for prefix in order.search.prefixes(chain)))
    steps = run_orders(explorer, plan, base, seeds=list(range(FRESH_FROM, FRESH_FROM + seeds)))
    ranked = ranked_orders([s for s in steps if s.chain in set(chains)], explorer._score_of, OBJECTIVES[explorer.spec.objective][0])
    return ranked, steps


def print_fresh(fresh: list[dict], truth: list[dict], rows: list[dict], seeds: int) -> None:
    before = {tuple(o["chain"]): o["score"] for o in truth}
    print(f"  on {seeds} fresh seeds ({FRESH_FROM}-{FRESH_FROM + seeds - 1}), the ground truth's contenders and every strategy's chain:")
    for o in fresh:
        print(f"    {o['score']:7.2f} ± {o['se']:.2f}  (ground truth {before[tuple(o['chain'])]:.2f})  {' -> '.join(o['chain'])}")
    for row in rows:
        if row.get("fresh_regret") is not None:
            print(f"  {_label(row):22s} fresh regret {row['fresh_regret']:.2f} (the best fresh order's se "
                  f"{row['fresh_best_se']:.2f}; the regret's own, paired per seed, {row['fresh_paired_se'] or 0:.2f})")


def screen_tau(search: dict, full: dict) -> float | None:
    """Kendall's tau between the screened scores of the orders the screen evaluated and their full-budget truth."""
    cheap = {tuple(o["chain"]): o["score"] for o in search.get("screened_orders", []) if tuple(o["chain"]) in full}
    return order.kendall_tau(cheap, {c: full[c] for c in cheap}) if len(cheap) > 1 else None


def aa_run(cache: Path, seeds: int = 3) -> tuple[int, int, int]:
    """(pair decisions declaring a winner, race tests dropping an order, comparisons): each pair order on
    seeds 0..k-1 against itself on seeds k..2k-1."""
    spec = setting_spec("default", seeds=2 * seeds)
    explorer = Explorer(spec, cache_dir=cache)
    base, _ = explorer.load_base()
    explorer.measure_base(base)
    steps = explorer.run_plan(base, order.pairwise_plan(spec.methods))
    winners = dropped = total = 0
    for chain in {s.chain for s in steps if len(s.chain) == 2}:
        runs = sorted((s for s in steps if s.chain == chain), key=lambda s: s.seed)
        first, second = runs[:seeds], runs[seeds:]
        outcome = order.decide_pair("A", "A2", explorer._scores(first), explorer._scores(second),
                                    min_margin=spec.min_margin, confidence=spec.confidence,
                                    images_first_then_second=explorer._hits(first), images_second_then_first=explorer._hits(second))
        copies = {("A",): explorer._trials(first), ("A2",): _reseeded(explorer._trials(second), seeds)}
        winners += outcome.winner is not None
        dropped += bool(eliminated(copies, list(copies), True, spec.confidence))
        total += 1
    return winners, dropped, total


def _reseeded(trials: dict[int, Trial], offset: int) -> dict[int, Trial]:
    """Seeds k..2k-1 relabelled 0..k-1, so that the race's test pairs them with the first copy's seeds."""
    return {seed - offset: trial for seed, trial in trials.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"step cache of the ground truth (default {CACHE})")
    parser.add_argument("--screens", default="0.25", help="fractions of the epochs to screen at with the default strategy "
                        "('' for none), e.g. 0.25,0.5")
    parser.add_argument("--no-aa", action="store_true", help="skip the real A/A run")
    parser.add_argument("--fresh-seeds", type=int, default=8, help="fresh seeds to run the ground truth's contenders and "
                        "the strategies' chains on (0: none)")
    parser.add_argument("--settles", default="", help="settle budgets (applications) to run the default strategy with "
                        "too, e.g. 200,400 ('' for none)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 beside another busy process: two threads on "
                        "one free core wait on each other, and a step took 4x as long)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    screens = [float(value) for value in args.screens.split(",") if value]
    settles = [int(value) for value in args.settles.split(",") if value]
    rows = []
    for name in args.settings.split(","):
        rows += run_setting(name, args.cache, screens, settles, args.fresh_seeds)
    summarize(rows)
    calibration(rows)
    if not args.no_aa:
        winners, dropped, total = aa_run(args.cache)
        print(f"\nreal A/A run (default setting, seeds 0-2 vs 3-5): the pair decision declared {winners} winner(s) and the "
              f"race's test dropped {dropped} order(s) in {total} comparisons")


def run_setting(name: str, cache: Path, screens: list[float], settles: list[int], fresh_seeds: int) -> list[dict]:
    """Ground truth of one setting, then every strategy (and the screened and settling default) judged against it, then (with
    `fresh_seeds`) against the ground truth's contenders on fresh seeds."""
    start = time.perf_counter()
    explorer = Explorer(setting_spec(name), cache_dir=cache)
    base, _ = explorer.load_base()
    truth, full = ground_truth(explorer, base)
    if not truth:
        print(f"\n{name}: no order applied on every seed; see the failed steps in the cache")
        return []
    sd = statistics.fmean(o["se"] * o["seeds"] ** 0.5 for o in truth)
    print(f"\n{name}: {len(truth)} orders, best {' -> '.join(truth[0]['chain'])} {truth[0]['score']:.2f} ± {truth[0]['se']:.2f}, "
          f"worst {truth[-1]['score']:.2f} (spread {abs(truth[0]['score'] - truth[-1]['score']):.2f}); mean seed-to-seed sd "
          f"of one order {sd:.2f} ({time.perf_counter() - start:.0f} s)")
    print(f"  {describe_orders(explorer, truth, full)}")
    rows = [judge(name, strategy, truth, cache) for strategy in SEARCHES]
    rows += [judge(name, DEFAULT, truth, cache, screen) for screen in screens]
    rows += [judge(name, DEFAULT, truth, cache, settle=settle) for settle in settles]
    for row in rows:
        print_row(row)
    if fresh_seeds:
        print_fresh(fresh_regrets(name, cache, truth, rows, fresh_seeds), truth, rows, fresh_seeds)
    return rows


def print_row(row: dict) -> None:
    label = _label(row)
    sure = "" if row["probability"] is None else (
        f"  P(best of evaluated) {row['probability']:.2f} (truly: {'yes' if row['truly_best_of_evaluated'] else 'no'}), "
        + ("separated" if row["separated"] else f"not separated from {row['inseparable']}")
        + (", the choice open" if row["open"] else ""))
    cheap = "" if row["screen_tau"] is None else f"  tau cheap vs full {row['screen_tau']:+.2f}"
    place = (f"rank {row['rank']}/{row['of']}  regret {row['regret']:.2f}" if row["rank"] else
             f"its chain is not among the {row['of']} orders that applied on every seed")
    print(f"  {label:22s} {place}  tau {row['tau'] or 0:+.2f}  "
          f"applications {row['applications']} (cost {row['cost']:.0f}, {row['applications'] / row['pairwise_total']:.2f}x "
          f"pairwise){sure}{cheap}  {' -> '.join(row['order'])}")


def summarize(rows: list[dict]) -> None:
    print("\n| strategy | median regret | worst regret | worst regret / best order's se | median rank | "
          "applications (all seeds) / pairwise's | cost in full-budget applications | fresh seeds: median regret | worst "
          "regret / the best fresh order's se | worst regret / its own se (paired per seed) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label in dict.fromkeys(_label(r) for r in rows):
        mine = [r for r in rows if _label(r) == label and r["regret"] is not None]
        if mine:
            print(f"| {label} | {statistics.median(r['regret'] for r in mine):.2f} | {max(r['regret'] for r in mine):.2f} | "
                  f"{max(_in_se(r['regret'], r['best_se']) for r in mine):.2f} | "
                  f"{statistics.median(r['rank'] for r in mine):.0f} | "
                  f"{', '.join(_ratio(r) for r in mine)} | {', '.join(str(round(r['cost'])) for r in mine)} | {_fresh(mine)} |")
    worse = [(r["setting"], r["regret"] - p["regret"], r["best_se"]) for r in rows if _label(r) == DEFAULT
             for p in rows if p["setting"] == r["setting"] and _label(p) == "pairwise" and None not in (r["regret"], p["regret"])]
    print("default minus pairwise regret per setting (positive: worse than pairwise), against the best order's se: "
          + ", ".join(f"{name} {difference:+.2f} ({se:.2f})" for name, difference, se in worse))


def calibration(rows: list[dict]) -> None:
    claimed = [r for r in rows if r["probability"] is not None and _label(r) == DEFAULT]
    if claimed:
        print(f"\n{DEFAULT}: mean claimed P(best of evaluated) {statistics.fmean(r['probability'] for r in claimed):.2f} "
              f"over {len(claimed)} settings; truly the best of its evaluated orders in "
              f"{statistics.fmean(r['truly_best_of_evaluated'] for r in claimed):.2f} of them")


def _fresh(rows: list[dict]) -> str:
    """The fresh seeds' median regret and worst regret in the best fresh order's and in its own standard errors, over
    the rows that have them."""
    fresh = [r for r in rows if r.get("fresh_regret") is not None]
    if not fresh:
        return "— | — | —"
    return (f"{statistics.median(r['fresh_regret'] for r in fresh):.2f} | "
            f"{max(_in_se(r['fresh_regret'], r['fresh_best_se']) for r in fresh):.2f} | "
            f"{max(_in_se(r['fresh_regret'], r['fresh_paired_se'] or 0.0) for r in fresh):.2f} ({len(fresh)} settings)")


def _in_se(regret: float, se: float) -> float:
    return regret / se if se else (0.0 if regret == 0 else float("inf"))


def _ratio(row: dict) -> str:
    return f"{row['applications'] / row['pairwise_total']:.2f}"


def _label(row: dict) -> str:
    return (row["strategy"] + (f" --screen {row['screen']:g}" if row["screen"] else "")
            + (f" --settle {row['settle']}" if row["settle"] else ""))


if __name__ == "__main__":
    main()

"""Exploration results as tables: printed for the CLI, written as JSON and CSV to a folder.

Results are staged and then moved into place (see `folders.py`): an interrupted run never leaves
half a result set behind, a folder holding anyone else's files is refused before the run, and a
folder problem found at the end sends the results to a temporary folder the error line names.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pandas as pd

from ..data.preprocessing import describe_preprocessing
from ..errors import one_line
from ..folders import MIB, FolderKind, check_destination, read_record, write_folder
from ..metrics import LATENCY_BATCH
from ..models.checkpoints import describe_source
from ..order.plan import chain_text
from ..order import LATENCY_OBJECTIVES
from ..report.figures import SIMULATION, cache_stopped_caveat, headline, headline_caveat, share_text, steps_caveat
from ..report.verdict import SETTLE_SEEDS, evidence_sentences, graph_orders_sentence, settle_suggestion
from .pipeline import StepResult

MARKER = ".ordercomp-results"
REPORT = "report.html"
RESULT_FILES = ("exploration.json", "steps.csv", "pairs.csv", "chain.csv", REPORT)
# What a results folder needs, roughly: the meeting report carries plotly.js (4.7 MB) beside the run's figures, and
# a 4-step exploration writes 5.8 KiB of exploration.json (0.5 KiB a step and the summary) and less in CSV, so
# 16 MiB holds thousands of steps.
RESULTS_BYTES = 16 * MIB
BASE_STEP = "base"  # the base model's row, in the chain table and in steps.csv


def steps_table(steps: list[dict], split: str = "val", latency_runtime: str = "eager", screened: bool = False) -> pd.DataFrame:
    """One row per step, its figures rounded to what they mean: accuracy to 2 decimals, bytes, MACs and BitOps
    whole (BitOps with early exits are an expectation over images), milliseconds to 3 significant digits.
    Latency is filled only where the step was timed, and `latency_runtime` names where (the eager PyTorch
    simulation, or the runtime the latency objectives timed the steps in). With a screen (`--screen`),
    `epochs_fraction` says what fraction of the fine-tuning epochs each step had."""
    rows = []
    for step in steps:
        metrics = step.get("metrics") or {}
        latency = metrics.get("latency_ms_b1")
        rows.append({"chain": chain_text(step["chain"]), "split": split, "seed": step.get("seed", 0), "status": step["status"],
                     **({"epochs_fraction": step.get("fidelity", 1.0)} if screened else {}),
                     "accuracy": _rounded(metrics.get("accuracy"), 2), "bitops": _whole(metrics.get("bitops")),
                     "macs": _whole(metrics.get("macs")), "size_bytes": _whole(metrics.get("size_bytes")),
                     "latency_ms_b1": _significant(latency), "latency_runtime": latency_runtime if latency is not None else "",
                     "seconds": round(step.get("seconds", 0.0), 1), "reason": step.get("reason") or ""})
    return pd.DataFrame(rows)


def results_table(record: dict) -> pd.DataFrame:
    """Every step of an exploration (validation split), then the base and the recommended chain applied to it step by
    step (test split, seed 0, timed in eager PyTorch), as the chain table lists them: what steps.csv and the dashboard's
    results CSV hold. The base's row (chain `base`) is what a step's ratios are taken against."""
    spec = record["spec"]
    runtime = spec.get("runtime", "eager") if spec["objective"] in LATENCY_OBJECTIVES else "eager"
    screened = spec.get("screen") is not None
    base = steps_table([{"chain": [], "status": "ok", "metrics": record["base_metrics"]}], "test", "eager", screened)
    return pd.concat([steps_table(record["steps"], "val", runtime, screened), base.assign(chain=BASE_STEP),
                      steps_table(record["chain_steps"], "test", "eager", screened)], ignore_index=True)


def _rounded(value, digits: int):
    return None if value is None else round(value, digits)


def _whole(value):
    return None if value is None else int(round(value))


def _significant(value, digits: int = 3):
    return None if value is None else float(f"{value:.{digits}g}")


def pairs_table(outcomes: list[dict]) -> pd.DataFrame:
    """One row per pair; `mean diff` > 0 means first -> second scored better than the reverse."""
    rows = []
    for o in outcomes:
        decision = "incompatible" if o["incompatible"] else ("tie" if o["tie"] else f"{o['winner']} first")
        if o.get("only_order"):
            decision = f"{o['winner']} first (only order that applies)"
        rows.append({"pair": f"{o['first']} / {o['second']}", "decision": decision,
                     "mean diff": round(o["mean_diff"], 3) if not o["incompatible"] else None,
                     "interval": interval_text(o), "spread": round(o["spread"], 3), "seeds": len(o["scores_first_then_second"]),
                     "images": o.get("images", 0),
                     "weak evidence": "yes" if o["weak_evidence"] else "no", "reason": o["incompatible"] or o.get("only_order") or ""})
    return pd.DataFrame(rows)


def search_table(record: dict, which: str = "orders") -> pd.DataFrame | None:
    """The whole orders the search evaluated (at the full budget), best first: score, standard error and
    seeds, regret against the best, the probability of being the best of them and what the race made of it;
    with `which="screened_orders"`, those it screened (on the first seed, or at a fraction of the epochs)."""
    orders = (record.get("search") or {}).get(which) or []
    if not orders:
        return None
    best, objective = orders[0]["score"], record["spec"]["objective"]
    return pd.DataFrame([{"rank": index, "order": chain_text(item["chain"]), f"{objective} score": round(item["score"], 3),
                          "standard error": round(item["se"], 3), "seeds": item["seeds"],
                          "regret": round(abs(best - item["score"]), 3), "P(best)": "" if item.get("probability") is None else share_text(item["probability"]),
                          "race": item.get("status", ""), "recommended": "★" if item["chain"] == list(record["chain"]) else ""}
                         for index, item in enumerate(orders, 1)])


def interval_text(outcome: dict) -> str:
    """'[low, high] (95%)' of a pair's mean difference, or '' when it could not be estimated."""
    if outcome.get("low") is None:
        return ""
    return f"[{outcome['low']:+.2f}, {outcome['high']:+.2f}] ({100 * outcome['confidence']:.0f}%)"


def chain_table(base_metrics: dict, steps: list[dict]) -> pd.DataFrame:
    rows = [{"step": BASE_STEP, **_figures(base_metrics, base_metrics)}]
    for step in steps:
        metrics = step.get("metrics")
        row = {"step": chain_text(step["chain"])}
        rows.append(row | (_figures(metrics, base_metrics) if metrics else {"status": f"{step['status']}: {step['reason']}"}))
    return pd.DataFrame(rows)


def _figures(metrics: dict, base: dict) -> dict:
    """A step's figures as the table words them: the size is the counted storage and the latencies the eager simulation's
    (see `figures.STEP_FIGURES`), so the columns say so; MACs rounded as steps.csv rounds them (with early exits they are
    an expectation: 162999.9996 is 163000 there and here)."""
    return {"accuracy %": round(metrics["accuracy"], 2), "params": metrics["params"],
            "counted KiB": round(metrics["size_bytes"] / 1024, 1), "MACs": _whole(metrics["macs"]),
            "BitOps": f"{metrics['bitops']:.3g}", "BitOps reduction": f"{base['bitops'] / metrics['bitops']:.1f}x",
            "eager ms, b=1": _round(metrics.get("latency_ms_b1")),
            f"eager ms, b={LATENCY_BATCH}": _round(metrics.get("latency_ms_batch"))}


def _round(value):
    return None if value is None else round(value, 3)


def result_files(record: dict) -> dict[str, str]:
    """{file name: content} of an exploration record's results."""
    return {"exploration.json": json.dumps(record, indent=1, default=str),
            "steps.csv": results_table(record).to_csv(index=False),
            "pairs.csv": pairs_table(record["outcomes"]).to_csv(index=False),
            "chain.csv": chain_table(record["base_metrics"], record["chain_steps"]).to_csv(index=False)}


def legacy_checksums(folder: Path) -> dict[str, str]:
    """A results folder written before markers held checksums: its files are ordercomp's exactly when they
    are what its exploration.json writes (the JSON itself written back unchanged)."""
    record = read_record(folder / "exploration.json")
    try:
        expected = result_files(record)
    except Exception:  # not an exploration record (None, or a value that is not a record): no file here is ordercomp's
        return {}
    return {name: hashlib.sha256(content.encode()).hexdigest() for name, content in expected.items()}


RESULTS_FOLDER = FolderKind(MARKER, "results", frozenset(RESULT_FILES), legacy=legacy_checksums)


def check_results_folder(out: str | Path) -> str:
    """Refuse, before any work, a results folder ordercomp cannot write or that holds files it did not write;
    returns what `write_results` is to find there at the end (folders.marker_state)."""
    return check_destination(Path(out), RESULTS_FOLDER, RESULT_FILES, RESULTS_BYTES)


def write_results(result, out: str | Path, seen: str | None = None) -> Path:
    """exploration.json plus steps.csv, pairs.csv, chain.csv and the meeting report (report.html, the file the
    dashboard's Export page downloads) in `out`, replacing only earlier results. With `seen` (from
    `check_results_folder`), when another run wrote its results there since, these go to a new temporary folder
    instead and the error line says where."""
    record = result.to_dict()
    files = result_files(record) | report_file(record)

    def write(folder: Path) -> None:
        for name, content in files.items():
            (folder / name).write_text(content, encoding="utf-8")

    write_folder(Path(out), RESULTS_FOLDER, write, seen)
    return Path(out)


def report_file(record: dict) -> dict[str, str]:
    """{report.html: the meeting report}; when it cannot be drawn, nothing, and a line saying so: a drawing error must
    not lose the exploration's other results."""
    from ..report.meeting import meeting_report  # it draws on this module's tables

    try:
        return {REPORT: meeting_report(record)}
    except Exception as error:
        print(f"the meeting report could not be drawn ({one_line(error)}): the results are written without {REPORT}",
              file=sys.stderr)
        return {}


def print_summary(result) -> None:
    record = result.to_dict()
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.max_colwidth", 60):
        print(f"\nBase: {describe_source(record['base'])}")
        print(f"Data: {record['data']['name']}; {describe_preprocessing(record['data']['preprocessing'])}")
        print("\nPair outcomes (objective: %s, %d seed(s))" % (record["spec"]["objective"], record["spec"]["seeds"]))
        print(pairs_table(record["outcomes"]).to_string(index=False))
        _print_caveat(record["steps"])
        print("\nPrecedence edges (before -> after, margin):")
        for edge in record["edges"]:
            print(f"  {edge['before']} → {edge['after']}  margin {edge['margin']:.2f}{' (weak)' if edge.get('weak') else ''}")
        for edge in record["dropped_edges"]:
            print(f"  dropped to break a cycle: {edge['before']} → {edge['after']} (margin {edge['margin']:.2f})")
        if not record["edges"]:
            print("  none: every pair is a tie or incompatible")
        _print_search(record)
        for entry in record.get("left_out", []):
            why = entry["reason"] if "with" in entry else f"{entry['status']} on the base: {entry['reason']}"
            print(f"\nLeft out of the chain: {entry['method']} ({why})")
        print(f"\nRecommended chain: {chain_text(record['chain'])}. {graph_orders_sentence(record)}")
        for sentence in evidence_sentences(record):
            print(sentence)
        settle = settle_suggestion(record.get("search") or {})
        if settle:
            print(f"To settle it: run the same command again with --settle {settle} (up to {SETTLE_SEEDS} more seeds for "
                  "those orders; with the same --cache, nothing already run is repeated).")
        if record["weak_pairs"]:
            print(f"Note: {record['weak_pairs']} pair decision(s) rest on weak evidence; more --seeds would make them firmer.")
        print(f"\nChain applied to the base model (test split; latency in the {SIMULATION}, not the shipped file):")
        print(chain_table(record["base_metrics"], record["chain_steps"]).to_string(index=False))
        _print_caveat(record["chain_steps"])
        print_headline(record)
        _print_exhaustive(record)
        _print_repeat(record)
        _print_failed(record.get("failed_steps", []))
        counts = record["applications"]
        print(f"\nMethod applications per seed: pairwise {counts['pairwise_per_seed']}, exhaustive {counts['exhaustive_per_seed']} "
              f"(without prefix sharing {counts['naive_exhaustive_per_seed']}); cached steps reused: {counts['cache_hits']}; "
              f"wall time {record['seconds']:.0f} s")
    if caveat := cache_stopped_caveat(record):
        print(caveat)


def print_headline(record: dict) -> None:
    """What the recommended chain buys, as the dashboard and the meeting report say it: the shipped file's figures
    in its runtime when the exploration measured one, else the simulation's, labelled as such."""
    from ..report.meeting import headline_figures  # the report imports this module's tables

    figures = headline_figures(record)
    if not figures["shipped"] and not figures["measured_chain"]:
        print("\nWhat the recommended chain buys: nothing was measured (no step of the chain gave a model).")
        return
    print("\nWhat the recommended chain buys:")
    if figures["shipped_error"]:
        print(f"  no file could be measured: {figures['shipped_error']}")
    for item in headline(figures):
        print(f"  {item.label}: {item.value} — {item.detail}")
    if caveat := headline_caveat(figures):
        print(f"  {caveat}")


def _print_caveat(steps: list[dict]) -> None:
    """Below a table of step figures, the sentence the pages and the report put there when those steps were timed busy."""
    if caveat := steps_caveat(steps):
        print(caveat)


def _print_search(record: dict) -> None:
    table = search_table(record)
    if table is not None:
        search = record["search"]
        budget = "" if search.get("screen") is None else " (confirmed at the full budget)"
        if search.get("screen") is None and search.get("screened_orders"):
            budget = f" ({len(search['screened_orders'])} searched on the first seed; the best, on the other seeds)"
        print(f"\nWhole orders evaluated by the {record['search']['strategy']} search{budget}, validation split, best first:")
        print(table.to_string(index=False))


def _print_exhaustive(record: dict) -> None:
    summary = record.get("exhaustive")
    if not summary:
        return
    regret = "" if summary["regret"] is None else f", regret {summary['regret']:.3f} (the best order's standard error {summary['best_se']:.3f})"
    print(f"\nExhaustive validation: the found chain ranks {summary['rank']} of {summary['of']} orders{regret}; "
          f"applications pairwise {summary['applications_pairwise']} vs exhaustive {summary['applications_exhaustive']} "
          f"({summary['cost_ratio']:.1f}x)")
    for index, item in enumerate(summary["orders"][:5], 1):
        print(f"  {index}. {chain_text(item['chain'])}: {item['score']:.3f}")


def _print_repeat(record: dict) -> None:
    """Whether applying the --repeat method once more after the chain helps, with the test-split figures it rests on."""
    repeat = record.get("repeat")
    if not repeat:
        return
    before, after = repeat["before"], repeat["after"]
    if after["status"] != "ok":
        print(f"\nRepeating {repeat['method']} after the chain: {after['status']} ({after['reason']})")
        return
    print(f"\nRepeating {repeat['method']} after the chain {'helps' if repeat['helps'] else 'does not help'} (test split): "
          f"accuracy {before['accuracy']:.2f}% -> {after['metrics']['accuracy']:.2f}%, "
          f"BitOps {before['bitops']:.3g} -> {after['metrics']['bitops']:.3g}")


def _print_failed(failed: list[dict]) -> None:
    if failed:
        print(f"\nSteps that failed with an error ({len(failed)}; the exploration went on without them):")
    for step in failed:
        print(f"  {chain_text(step['chain'])} (seed {step['seed']}): {step['reason']}")


def print_chain_steps(base_metrics: dict, steps: list[StepResult]) -> None:
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(chain_table(base_metrics, [s.to_dict() for s in steps]).to_string(index=False))

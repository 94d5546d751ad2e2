"""The meeting report: one self-contained HTML file of an exploration record, readable offline.

Its first screen is for a reader who has not seen the app: the date, the model and data, what was
compared, the recommended order in words, what it buys in the shipped file (size, speed in its runtime,
accuracy; `figures.headline`), how sure the evidence is, and the next step. Then one-line explanations
of BitOps and of the methods, the evidence (precedence graph, pair matrix, trade-offs, the chain step
by step, tables), the notes a reader needs to weigh it and the settings as a table. plotly's
JavaScript is inlined once; nothing is fetched from the web.

    Path("report.html").write_text(meeting_report(json.loads(Path("exploration.json").read_text())))
"""
from __future__ import annotations

import html
import math
import time
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from . import charts
from .figures import (SIMULATION, STEP_FIGURES, applications, cache_hits_text, duration, epochs_text, headline, headline_caveat, plural,
                      steps_caveat)
from .verdict import evidence_sentences, graph_orders_sentence, settle_suggestion
from ..order import OBJECTIVES
from ..order.plan import chain_text
from ..exploration.results import chain_table, pairs_table, results_table, search_table, steps_table

STYLE = """
body{font-family:Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{margin-bottom:.2em} .chain{font-size:2.2em;font-weight:bold;color:#b2182b;margin:.3em 0 .8em}
.headlines{display:flex;gap:1em;flex-wrap:wrap} .headline{border:1px solid #ddd;border-radius:8px;padding:.6em 1em;flex:1 1 0;min-width:170px;box-sizing:border-box}
.headline .value{font-size:1.8em;font-weight:bold} .headline .label{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em} th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th{background:#f5f5f5} td:first-child,th:first-child{text-align:left} .notes li{margin:.3em 0} .muted{color:#666}
td,th{overflow-wrap:anywhere} .wide{overflow-x:auto;max-width:100%} .lead p{margin:.5em 0;font-size:1.05em}
.headline .detail{color:#666;font-size:.8em} .settings td{text-align:left}
"""


def _ratio(before: float | None, after: float | None) -> float | None:
    return before / after if before and after else None


def headline_figures(record: dict) -> dict:
    """The one place a record becomes headline numbers (pages and report call it; `figures.headline` words them). Keys:

    bitops_reduction    base BitOps / chain BitOps (test split, the last measured step)
    accuracy_change     chain accuracy - base accuracy, points (PyTorch, test split)
    size_reduction      base storage / chain storage, as the metrics count it (bit widths, sparsity)
    latency_ms          (base, chain) batch-1 ms of the eager PyTorch simulation (fake quantisation): not what ships
    latency_change      chain / base of those: the simulation's, label it so
    measured_chain      the chain the figures are for (shorter when the chain stopped early)
    shipped             the record's `shipped` entry (Exploration.shipped) when it measured a file, else None; then:
    shipped_format, shipped_runtime   e.g. "onnx", "onnxruntime (CPU)"
    shipped_bytes       (base file bytes, chain file bytes)
    shipped_size_reduction            base file bytes / chain file bytes
    shipped_accuracy    (base, chain) accuracy of the files in their runtime, test split
    shipped_accuracy_change           chain file - base file, points
    shipped_latency_ms  {"1": (base ms, chain ms), "32": (...)}, after warm-up, timed in alternating rounds
    shipped_speedup     {"1": base ms / chain ms, "32": ...}: above 1 is faster
    shipped_threads, shipped_cpu      the threads and the CPU (model, logical_cores, flags) they were timed with
    shipped_load        how busy the machine was meanwhile (`runtimes.machine_load`; None in a record from before it was kept)
    shipped_error       why no file was measured (None when one was, or none was asked for)
    """
    base, final = record["base_metrics"], charts.last_measured_step(record)
    after = final["metrics"] if final else {}
    latency = (base.get("latency_ms_b1"), after.get("latency_ms_b1"))
    return {"bitops_reduction": _ratio(base["bitops"], after.get("bitops")),
            "accuracy_change": after["accuracy"] - base["accuracy"] if after else None,
            "size_reduction": _ratio(base["size_bytes"], after.get("size_bytes")),
            "latency_ms": latency, "latency_change": _ratio(latency[1], latency[0]),
            "measured_chain": final["chain"] if final else []} | shipped_figures(record.get("shipped"))


def shipped_figures(shipped: dict | None) -> dict:
    """The `shipped_*` headline keys of a record's shipped entry (see `headline_figures`)."""
    if not shipped or "error" in shipped:
        return {"shipped": None, "shipped_error": (shipped or {}).get("error")}
    _check_batches(shipped.get("latency_ms") or {})
    try:
        return _shipped_keys(shipped)
    except KeyError as missing:  # a record ordercomp did not write, or cut by hand
        raise ValueError(f"the record's shipped entry has no {missing.args[0]!r} where ordercomp writes one (format, runtime, "
                         "sizes, accuracies and latencies at each batch of the file and of its base, speed-ups, threads, "
                         "CPU): correct that entry or remove it") from None


def _shipped_keys(shipped: dict) -> dict:
    base = shipped["base"]
    return {"shipped": shipped, "shipped_error": None, "shipped_format": shipped["format"], "shipped_runtime": shipped["runtime"],
            "shipped_bytes": (base["file_bytes"], shipped["file_bytes"]), "shipped_size_reduction": shipped["size_ratio"],
            "shipped_accuracy": (base["accuracy"], shipped["accuracy"]),
            "shipped_accuracy_change": shipped["accuracy"] - base["accuracy"],
            "shipped_latency_ms": {b: (base["latency_ms"][b], ms) for b, ms in shipped["latency_ms"].items()},
            "shipped_speedup": dict(shipped["speedup"]), "shipped_threads": shipped["threads"], "shipped_cpu": shipped["cpu"],
            "shipped_load": shipped.get("load")}


def _check_batches(latency_ms: dict) -> None:
    """A record ordercomp did not write may time a batch size no run has ("1.5", "x"): one line naming it, where the
    headline's batch order (`int(batch)`) raised a bare "invalid literal for int()"."""
    odd = [batch for batch in latency_ms if not str(batch).isdecimal()]
    if odd:
        raise ValueError(f"the record's shipped latency_ms has a batch size that is not a whole number ({odd[0]!r}): its keys "
                         "are the batch sizes the file was timed at, such as '1' and '32'; correct or remove that entry")


def _headline_cards(figures: dict) -> str:
    cards = [f'<div class="headline"><div class="label">{html.escape(item.label)}</div><div class="value">{html.escape(item.value)}</div>'
             f'<div class="detail">{html.escape(item.detail)}</div></div>' for item in headline(figures)]
    return f'<div class="headlines">{"".join(cards)}</div>' + _muted(headline_caveat(figures))


def _figure(fig: go.Figure) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def _table(df: pd.DataFrame, css: str = "") -> str:
    """A table that wraps its cells and scrolls inside its own box when it cannot fit the page."""
    return f'<div class="wide">{df.to_html(index=False, na_rep="—", border=0, classes=css or None)}</div>'


def exhaustive_table(record: dict) -> pd.DataFrame | None:
    summary = record.get("exhaustive")
    if not summary:
        return None
    chain = list(record["chain"])
    best = summary["orders"][0]["score"] if summary["orders"] else 0.0
    return pd.DataFrame([{"rank": index, "order": chain_text(item["chain"]), f"{record['spec']['objective']} score": round(item["score"], 3),
                          "standard error": round(item.get("se", 0.0), 3), "regret": round(abs(best - item["score"]), 3),
                          "recommended": "★" if item["chain"] == chain else ""}
                         for index, item in enumerate(summary["orders"], 1)])


def evidence_sentence(record: dict) -> str:
    """Plain sentences on how far the evidence supports the recommended order (report/verdict.py)."""
    return " ".join(evidence_sentences(record))


def pair_name(outcome: dict) -> str:
    return f"{outcome['first']} / {outcome['second']}"


def notes(record: dict) -> list[str]:
    """Plain-language caveats: weak evidence, ties, incompatible pairs, dropped edges, a failed chain step."""
    items = []
    weak = [o for o in record["outcomes"] if o["weak_evidence"] and not o["incompatible"]]
    if weak:
        items.append(f"{len(weak)} pair decision(s) rest on weak evidence ({', '.join(map(pair_name, weak))}); "
                     "more seeds would make them firmer.")
    ties = [pair_name(o) for o in record["outcomes"] if o["tie"] and not o["incompatible"]]
    if ties:
        items.append(f"Ties (either order is as good): {', '.join(ties)}.")
    items += [f"{pair_name(o)} could not be compared: {o['incompatible']}" for o in record["outcomes"] if o["incompatible"]]
    items += [f"The edge {e['before']} → {e['after']} (margin {e['margin']:.2f}) was dropped to break a cycle of pair decisions."
              for e in record["dropped_edges"]]
    broken = [s for s in record["chain_steps"] if s["status"] != "ok"]
    if broken:
        items.append(f"The chain stopped at {chain_text(broken[0]['chain'])} ({broken[0]['status']}: {broken[0]['reason']}); "
                     "the headline figures are for the steps before it.")
    items.append(graph_orders_sentence(record))
    items += _exhaustive_note(record) + _repeat_note(record)
    return items


def _exhaustive_note(record: dict) -> list[str]:
    summary = record.get("exhaustive")
    if not summary:
        return []
    return [f"Exhaustive validation: the recommended chain ranks {summary['rank']} of {summary['of']} orders; the pairwise search "
            f"needed {summary['applications_pairwise']} method applications against {summary['applications_exhaustive']} "
            f"({summary['cost_ratio']:.1f}x)."]


def _repeat_note(record: dict) -> list[str]:
    repeat = record.get("repeat")
    if not repeat:
        return []
    verdict = "helps" if repeat["helps"] else "does not help"
    return [f"Applying {repeat['method']} once more after the chain {verdict}."]


def run_settings(record: dict) -> pd.DataFrame:
    """The run's settings as a reader reads them: one setting a row, in words and rounded numbers."""
    spec, budget = record["spec"], record["spec"]["budget"]
    objective = spec["objective"]
    rows = {"model": _base_text(record), "data": _data_text(record), "methods compared": ", ".join(spec["methods"]),
            "objective": f"{objective}: {OBJECTIVES[objective][1]}" if objective in OBJECTIVES else objective,
            "seeds": spec["seeds"], "fine-tuning per step": f"{epochs_text(budget['epochs'])}, learning rate {budget['lr']:g}",
            "minimum margin": f"{spec['min_margin']:g} accuracy points", "device": record.get("device") or spec["device"],
            "method settings": "; ".join(_config_text(name, config) for name, config in record["configs"].items()),
            "method applications": f"{applications(record)}{cache_hits_text(record)}",
            "wall time": duration(record["seconds"])}
    return pd.DataFrame({"setting": list(rows), "value": [str(v) for v in rows.values()]})


def _config_text(name: str, config: dict) -> str:
    fields = ", ".join(f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"
                       for key, value in config.items() if key not in ("method", "version"))
    return f"{name}: {fields}" if fields else name


def _base_text(record: dict) -> str:
    base = record.get("base") or {}
    what = base.get("architecture") or base.get("source")
    return f"{record['spec']['model']}" + (f" ({what})" if what and what != record["spec"]["model"] else "")


def _title_text(record: dict) -> str:
    """'smallcnn on imagefolder:digits16': the model's and the data's names as the CLI's summary gives them, not the
    paths the spec holds (a dashboard's upload lives in a folder named by its hash, which tells a reader nothing)."""
    spec, data = record["spec"], record.get("data") or {}
    return f"{Path(spec['model']).name} on {data.get('name') or Path(spec['data']).name}"


def _data_text(record: dict) -> str:
    data = record.get("data")
    if not data:
        return record["spec"]["data"]
    return (f"{data['name']}: {plural(data['classes'], 'class')}, {data['input_size']}×{data['input_size']} px, "
            f"{data['train']} training, {data['val']} validation and {data['test']} test images")


def _muted(*sentences: str) -> str:
    """A muted paragraph of the sentences that are not empty; nothing when all are."""
    text = " ".join(sentence for sentence in sentences if sentence)
    return f'<p class="muted">{html.escape(text)}</p>' if text else ""


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def _tradeoff_sections(record: dict) -> str:
    points = charts.tradeoff_points(record)
    axes = [x for x in charts.AXES if points[x].notna().sum() >= 2]
    return "".join(_figure(charts.tradeoff_figure(record, x)) for x in axes)


def _summary(record: dict, finished: float | None) -> str:
    """The first screen: when, on what, what was compared, the order in words, what it buys, how sure, what next."""
    spec, chain, figures = record["spec"], chain_text(record["chain"]), headline_figures(record)
    when = time.strftime("%d %B %Y, %H:%M", time.localtime(finished or time.time()))
    compared = (f"Orders of applying {len(spec['methods'])} compression methods ({', '.join(spec['methods'])}) to "
                f"{_base_text(record)} were compared, {compared_orders(record)}: {applications(record)} method applications over "
                f"{plural(spec['seeds'], 'seed')}, {duration(record['seconds'])}, on {_data_text(record)}.")
    parts = [f"<h1>Order of compression: {html.escape(_title_text(record))}</h1>",
             _muted(f'{when} · device {record.get("device") or spec["device"]}'),
             '<div class="lead">', f"<p><b>What was compared.</b> {html.escape(compared)}</p>",
             f"<p><b>Recommended order.</b> {html.escape(order_in_words(record['chain']))}</p>", f'<div class="chain">{html.escape(chain)}</div>',
             f"<p><b>What it buys{'' if figures['shipped'] else ' (' + SIMULATION + ')'}.</b></p>", _headline_cards(figures),
             f"<p><b>How sure.</b> {html.escape(evidence_sentence(record))}</p>",
             f"<p><b>Next step.</b> {html.escape(next_step(record, figures))}</p>", "</div>"]
    if figures["measured_chain"] != list(record["chain"]):
        measured = chain_text(figures["measured_chain"]) or "no step"
        parts.append(_muted(f"Figures after {measured}: the chain stopped early (see the notes)."))
    return "\n".join(parts)


def compared_orders(record: dict) -> str:
    """What was compared, without claiming more: 'every pair in both orders, then 18 of the 24 whole orders' (the
    search's), 'every pair in both orders and every one of the 24 whole orders' (exhaustive validation). The report said
    "Every order ... was compared pairwise" of a default run that measured 18 of 24 whole orders."""
    total = math.factorial(len(record["spec"]["methods"]))
    if record.get("exhaustive"):
        return f"every pair in both orders and every one of the {total} whole orders"
    search = record.get("search") or {}
    whole = {tuple(item["chain"]) for key in ("orders", "screened_orders") for item in search.get(key) or []}
    return f"every pair in both orders, then {len(whole)} of the {total} whole orders" if whole else "every pair in both orders"


def order_in_words(chain: list[str]) -> str:
    """'First structured pruning (prune), then quantization-aware training (quantize).'"""
    from ..methods.registry import METHODS

    names = [f"{METHODS[m].title[0].lower() + METHODS[m].title[1:]} ({m})" if m in METHODS else m for m in chain]
    if len(names) == 1:
        return f"Only {names[0]}."
    return f"First {names[0]}, " + "".join(f"then {name}, " for name in names[1:-1]) + f"and last {names[-1]}."


def next_step(record: dict, figures: dict) -> str:
    """What to do with the result: settle an open choice among the top orders first, then firm up undecided pairs,
    else try the shipped file where it will run."""
    settle = settle_suggestion(record.get("search") or {})
    if settle:
        return (f"An order could still be better than the recommended one by more than the {record['search']['verdict']['margin']:g} "
                f"points that count: settle the choice before relying on the order (the dashboard's Settle it on the Order "
                f"page, or the same command with --settle {settle}; nothing already run is repeated).")
    undecided = [o for o in record["outcomes"] if not o["incompatible"] and (o["tie"] or o["weak_evidence"])]
    if undecided:
        return (f"{plural(len(undecided), 'pair')} of methods could not be told apart with {plural(record['spec']['seeds'], 'seed')}: "
                "run the exploration again with more seeds before relying on the order; meanwhile the recommended order "
                "is a reasonable default, as the pairs involved are about as good either way.")
    shipped = figures["shipped"]
    target = f"the {shipped['format']} file" if shipped else "the compressed model (Export page)"
    return f"Export {target} and measure it on the hardware and data it will serve, then decide whether to ship it."


def glossary(record: dict) -> str:
    """One line on BitOps and on every method compared."""
    from ..methods.registry import METHODS

    lines = ["<b>BitOps</b>: bit operations per image, multiply-accumulates × weight bits × activation bits; a model-level "
             "count that predicts hardware cost, not a measured speed."]
    lines += [f"<b>{html.escape(m)}</b> ({html.escape(METHODS[m].title.lower())}): {html.escape(METHODS[m].summary)}"
              for m in record["spec"]["methods"] if m in METHODS]
    return "<ul>" + "".join(f"<li>{line}</li>" for line in lines) + "</ul>"


def _tables(record: dict) -> list[str]:
    tables = [_section("Pair outcomes", _table(pairs_table(record["outcomes"]))),
              _section("The chain applied to the base (test split)", _muted(STEP_FIGURES, steps_caveat(record["chain_steps"]))
                       + _table(chain_table(record["base_metrics"], record["chain_steps"])))]
    searched = search_table(record)
    if searched is not None:
        tables.append(_section(f"Whole orders evaluated by the {record['search']['strategy']} search", _table(searched)))
    ranking = exhaustive_table(record)
    if ranking is not None:
        tables.append(_section("Exhaustive ranking of every order", _table(ranking)))
    steps = f"<details><summary>{len(record['steps'])} steps</summary>{_table(steps_table(record['steps']))}</details>"
    return tables + [_section("Every step of the exploration (validation split)", steps)]


def meeting_report(record: dict, finished: float | None = None) -> str:
    """The whole report as one HTML string; `finished` (seconds since the epoch) dates it, else the time it is written."""
    note_items = "".join(f"<li>{html.escape(item)}</li>" for item in notes(record)) or "<li>No caveats.</li>"
    body = [_summary(record, finished), _section("Terms", glossary(record)),
            _section("Precedence graph", _muted(charts.precedence_caption(record))
                     + _figure(charts.precedence_figure(record))),
            _section("Pair matrix", _muted(steps_caveat(record["steps"])) + _figure(charts.pair_matrix_figure(record))),
            _section("Trade-offs", _muted(STEP_FIGURES, steps_caveat(record["steps"] + record["chain_steps"])) + _tradeoff_sections(record)),
            _section("The chain step by step", _figure(charts.chain_steps_figure(record))),
            *_tables(record), _section("Notes", f'<ul class="notes">{note_items}</ul>'),
            _section("Run settings", _table(run_settings(record), "settings"))]
    title = html.escape(chain_text(record["chain"]))
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">"
            f"<title>Order of compression: {title}</title>"
            f"<style>{STYLE}</style><script type=\"text/javascript\">{get_plotlyjs()}</script></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def results_csv(record: dict) -> bytes:
    """Every step of the exploration and of the recommended chain as CSV (`results_table`), e.g. for a browser download."""
    return results_table(record).to_csv(index=False).encode()

"""The meeting report: one self-contained HTML file of an exploration record, readable offline.

It leads with the recommended chain and what it buys against the base model, then shows the
evidence (precedence graph, pair matrix, trade-offs, the chain step by step, tables) and the notes
a reader needs to weigh it. plotly's JavaScript is inlined once; nothing is fetched from the web.

    Path("report.html").write_text(meeting_report(json.loads(Path("exploration.json").read_text())))
"""
from __future__ import annotations

import html
import json

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from . import charts
from ..exploration.results import chain_table, pairs_table, search_table, steps_table
from .verdict import evidence_sentences

STYLE = """
body{font-family:Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{margin-bottom:.2em} .chain{font-size:2.2em;font-weight:bold;color:#b2182b;margin:.3em 0 .8em}
.headlines{display:flex;gap:1em;flex-wrap:wrap} .headline{border:1px solid #ddd;border-radius:8px;padding:.7em 1.2em;min-width:180px}
.headline .value{font-size:1.8em;font-weight:bold} .headline .label{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em} th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th{background:#f5f5f5} td:first-child,th:first-child{text-align:left} .notes li{margin:.3em 0} .muted{color:#666}
"""


def _ratio(before: float | None, after: float | None) -> float | None:
    return before / after if before and after else None


def headline_figures(record: dict) -> dict:
    """The chain's effect against the base model on the test split (the last measured step)."""
    base, final = record["base_metrics"], charts.last_measured_step(record)
    after = final["metrics"] if final else {}
    latency = (base.get("latency_ms_b1"), after.get("latency_ms_b1"))
    return {"bitops_reduction": _ratio(base["bitops"], after.get("bitops")),
            "accuracy_change": after["accuracy"] - base["accuracy"] if after else None,
            "size_reduction": _ratio(base["size_bytes"], after.get("size_bytes")),
            "latency_ms": latency, "latency_change": _ratio(latency[1], latency[0]),
            "measured_chain": final["chain"] if final else []}


def _headline_cards(figures: dict) -> str:
    def card(value: str, label: str) -> str:
        return f'<div class="headline"><div class="value">{html.escape(value)}</div><div class="label">{html.escape(label)}</div></div>'

    base_ms, final_ms = figures["latency_ms"]
    cards = [card(_times(figures["bitops_reduction"]), "fewer BitOps than the base"),
             card("n/a" if figures["accuracy_change"] is None else f"{figures['accuracy_change']:+.2f} pts", "top-1 accuracy change"),
             card(_times(figures["size_reduction"]), "smaller model than the base"),
             card(speed_text(figures["latency_change"]),
                  "latency at batch 1 against the base" + (f" ({base_ms:.3f} -> {final_ms:.3f} ms)" if figures["latency_change"] else ""))]
    return f'<div class="headlines">{"".join(cards)}</div>'


def speed_text(latency_change: float | None) -> str:
    """'2.33x slower' or '1.50x faster' from latency after / latency before."""
    if latency_change is None:
        return "n/a"
    if latency_change >= 1:
        return f"{latency_change:.2f}x slower"
    return f"{1 / latency_change:.2f}x faster"


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}x"


def _figure(fig: go.Figure) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, na_rep="—", border=0)


def exhaustive_table(record: dict) -> pd.DataFrame | None:
    summary = record.get("exhaustive")
    if not summary:
        return None
    chain = list(record["chain"])
    best = summary["orders"][0]["score"] if summary["orders"] else 0.0
    return pd.DataFrame([{"rank": index, "order": charts.arrow(item["chain"]), f"{record['spec']['objective']} score": round(item["score"], 3),
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
    items += [f"The edge {e['before']} -> {e['after']} (margin {e['margin']:.2f}) was dropped to break a cycle of pair decisions."
              for e in record["dropped_edges"]]
    broken = [s for s in record["chain_steps"] if s["status"] != "ok"]
    if broken:
        items.append(f"The chain stopped at {charts.arrow(broken[0]['chain'])} ({broken[0]['status']}: {broken[0]['reason']}); "
                     "the headline figures are for the steps before it.")
    if len(record["valid_chains"]) > 1:
        items.append(f"{len(record['valid_chains'])} orders are consistent with the precedence graph; the recommended one is shown.")
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
    spec, counts = record["spec"], record["applications"]
    rows = {"model": spec["model"], "base source": json.dumps(record["base"]), "data": spec["data"],
            "methods": ", ".join(spec["methods"]), "objective": spec["objective"], "seeds": spec["seeds"],
            "fine-tuning budget": json.dumps(spec["budget"]), "minimum margin": spec["min_margin"], "device": spec["device"],
            "method settings": "; ".join(f"{k}: {json.dumps(v)}" for k, v in record["configs"].items()),
            "method applications per seed": f"{counts['pairwise_per_seed']} (cache hits {counts['cache_hits']})",
            "wall time": f"{record['seconds']:.0f} s"}
    return pd.DataFrame({"setting": list(rows), "value": [str(v) for v in rows.values()]})


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def _tradeoff_sections(record: dict) -> str:
    points = charts.tradeoff_points(record)
    axes = [x for x in charts.AXES if points[x].notna().sum() >= 2]
    return "".join(_figure(charts.tradeoff_figure(record, x)) for x in axes)


def _summary(record: dict) -> str:
    """Title, the recommended chain in big text and the headline figures."""
    spec, chain, figures = record["spec"], charts.arrow(record["chain"]), headline_figures(record)
    parts = [f"<h1>Order of compression: {html.escape(spec['model'])} on {html.escape(spec['data'])}</h1>",
             '<p class="muted">Recommended order of compression methods</p>', f'<div class="chain">{html.escape(chain)}</div>',
             f"<p>{html.escape(evidence_sentence(record))}</p>", _headline_cards(figures)]
    if figures["measured_chain"] != list(record["chain"]):
        measured = charts.arrow(figures["measured_chain"]) or "no step"
        parts.append(f'<p class="muted">Figures after {html.escape(measured)}: the chain stopped early (see the notes).</p>')
    return "\n".join(parts)


def _tables(record: dict) -> list[str]:
    tables = [_section("Pair outcomes", _table(pairs_table(record["outcomes"]))),
              _section("The chain applied to the base (test split)", _table(chain_table(record["base_metrics"], record["chain_steps"])))]
    searched = search_table(record)
    if searched is not None:
        tables.append(_section(f"Whole orders evaluated by the {record['search']['strategy']} search", _table(searched)))
    ranking = exhaustive_table(record)
    if ranking is not None:
        tables.append(_section("Exhaustive ranking of every order", _table(ranking)))
    steps = f"<details><summary>{len(record['steps'])} steps</summary>{_table(steps_table(record['steps']))}</details>"
    return tables + [_section("Every step of the exploration (validation split)", steps)]


def meeting_report(record: dict) -> str:
    """The whole report as one HTML string."""
    note_items = "".join(f"<li>{html.escape(item)}</li>" for item in notes(record)) or "<li>No caveats.</li>"
    body = [_summary(record),
            _section("Precedence graph", _figure(charts.precedence_figure(record))),
            _section("Pair matrix", _figure(charts.pair_matrix_figure(record))),
            _section("Trade-offs", _tradeoff_sections(record)),
            _section("The chain step by step", _figure(charts.chain_steps_figure(record))),
            *_tables(record), _section("Notes", f'<ul class="notes">{note_items}</ul>'),
            _section("Run settings", _table(run_settings(record)))]
    title = html.escape(charts.arrow(record["chain"]))
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Order of compression: {title}</title>"
            f"<style>{STYLE}</style><script type=\"text/javascript\">{get_plotlyjs()}</script></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def results_csv(record: dict) -> bytes:
    """Every step of the exploration as CSV, e.g. for a browser download."""
    return steps_table(record["steps"]).to_csv(index=False).encode()

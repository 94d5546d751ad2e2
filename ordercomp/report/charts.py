"""Figures of an exploration record (`Exploration.to_dict()`): trade-offs, the chain step by step,
the pair matrix and the precedence graph, as plotly figures and a Graphviz DOT string.

The dashboard and the meeting report draw the same figures from here. Every function takes the
plain record dict, so a record read back from exploration.json draws exactly like a fresh one. plotly draws
a subset of HTML in text, hover text, titles and tick labels, so every figure draws from a copy of the record
whose text is escaped (`literal`): a name or setting holding <a href="..."> or <b> reads as written.
"""
from __future__ import annotations

import functools
import html
import math
import statistics

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..order.plan import chain_text
from .figures import plural, size_text

KIND_COLOURS = {"base": "#444444", "single": "#1f77b4", "pair": "#ff7f0e", "prefix": "#c5b0d5", "whole order": "#9467bd",
                "chain": "#d62728"}
# trade-off axis -> (what it measures, axis title, hover format); a size is hovered as `size_text` words it (customdata[4])
AXES = {"bitops": ("BitOps", "BitOps per image", "%{x:.3s}"), "size_bytes": ("model size", "Model size", "%{customdata[4]}"),
        "latency_ms": ("latency", "Latency at batch 1 (ms)", "%{x:.3f} ms")}
METRIC_COLUMNS = {"accuracy": "accuracy", "bitops": "bitops", "size_bytes": "size_bytes", "latency_ms": "latency_ms_b1"}
OBJECTIVE_UNITS = {"accuracy": "accuracy points", "bitops": "BitOps", "latency": "ms", "weighted": "score", "weighted_latency": "score"}
HOVER_COLUMNS = ["label", "split", "seeds", "config", "size"]
CHAIN_COLOUR, DROPPED_COLOUR, EDGE_COLOUR = "#d62728", "#e41a1c", "#555555"
CHAIN_ONLY = "chain order"  # the label of a chain link that no decided pair backs


def literal(value):
    """`value` with every string in it, keys included, escaped for plotly (& < >; plotly turns the entities back into
    the characters it draws), so that record text is drawn as written, never as a link, bold or a line break."""
    if isinstance(value, str):
        return html.escape(value, quote=False)
    if isinstance(value, dict):
        return {literal(key): literal(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(literal(item) for item in value)
    return value


def drawn_literally(figure):
    """A figure function that draws from `literal(record)`: the one place record text is escaped for the charts."""
    @functools.wraps(figure)
    def draw(record: dict, *args, **kwargs) -> go.Figure:
        return figure(literal(record), *args, **kwargs)
    return draw


def config_text(record: dict, chain) -> str:
    """One line per method of `chain` with its settings, for hover text."""
    lines = []
    for name in chain:
        fields = {k: v for k, v in record["configs"].get(name, {}).items() if k not in ("method", "version")}
        lines.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in fields.items()))
    return "<br>".join(lines)


def _point(record: dict, label: str, kind: str, chain, metrics: dict, split: str, seeds: int) -> dict:
    return {"label": label, "kind": kind, **{column: metrics.get(key) for column, key in METRIC_COLUMNS.items()},
            "split": split, "seeds": seeds, "config": config_text(record, chain) or "no compression",
            "size": size_text(metrics.get("size_bytes"))}


def _mean_metrics(steps: list[dict]) -> dict:
    """Mean over seeds of every metric; a metric missing in any seed stays missing."""
    keys = METRIC_COLUMNS.values()
    return {k: statistics.fmean(s["metrics"][k] for s in steps) if all(s["metrics"].get(k) is not None for s in steps) else None
            for k in keys}


def _kind_of(chain: tuple, methods: int) -> str:
    """single, pair, a longer prefix, or a whole order (every method applied)."""
    if len(chain) == methods and methods > 2:
        return "whole order"
    return {1: "single", 2: "pair"}.get(len(chain), "prefix")


def tradeoff_points(record: dict) -> pd.DataFrame:
    """One row per point: base, each single, pair, longer prefix and whole order evaluated at the full
    fine-tuning budget (val mean over seeds; screening steps are another budget's models), the chain (test)."""
    rows = [_point(record, "base", "base", [], record["base_metrics"], "test", 1)]
    by_chain: dict[tuple, list[dict]] = {}
    for step in record["steps"]:
        if step["status"] == "ok" and step.get("metrics") and step.get("fidelity", 1.0) == 1.0:
            by_chain.setdefault(tuple(step["chain"]), []).append(step)
    for chain, steps in by_chain.items():
        rows.append(_point(record, chain_text(chain), _kind_of(chain, len(record["spec"]["methods"])), chain, _mean_metrics(steps), "val", len(steps)))
    final = last_measured_step(record)
    if final:
        rows.append(_point(record, f"chain: {chain_text(final['chain'])}", "chain", final["chain"], final["metrics"], "test", 1))
    return pd.DataFrame(rows)


def last_measured_step(record: dict) -> dict | None:
    """The last chain step that produced a model (the whole chain unless a step failed)."""
    measured = [s for s in record["chain_steps"] if s["status"] == "ok" and s.get("metrics")]
    return measured[-1] if measured else None


def pareto_front(df: pd.DataFrame, x: str, y: str = "accuracy") -> pd.Series:
    """True for points no other point beats: lower or equal `x` and higher or equal `y`, one strictly."""
    valid = df[[x, y]].notna().all(axis=1)
    points = df.loc[valid, [x, y]].astype(float)

    def dominated(px: float, py: float) -> bool:
        better = (points[x] <= px) & (points[y] >= py) & ((points[x] < px) | (points[y] > py))
        return bool(better.any())

    mask = pd.Series(False, index=df.index)
    for index, row in points.iterrows():
        mask[index] = not dominated(row[x], row[y])
    return mask


def _hover(x: str) -> str:
    name, _, value = AXES[x]
    return (f"<b>%{{customdata[0]}}</b><br>accuracy %{{y:.2f}}%<br>{name}: {value}<br>"
            "%{customdata[1]} split, %{customdata[2]} seed(s)<br>%{customdata[3]}<extra>%{fullData.name}</extra>")


@drawn_literally
def tradeoff_figure(record: dict, x: str = "bitops") -> go.Figure:
    """Accuracy against cost on a log axis, coloured by kind, with the Pareto frontier marked."""
    if x not in AXES:
        raise ValueError(f"unknown trade-off axis {x!r}: choose one of {', '.join(AXES)}")
    df = tradeoff_points(record)
    shown = df.dropna(subset=[x, "accuracy"])
    shown = shown[shown[x] > 0]
    fig = go.Figure(_point_traces(shown, x))
    fig.update_layout(title=f"Accuracy against {AXES[x][0]}", legend_title_text="point",
                      xaxis_title=f"{AXES[x][1]}, log scale", yaxis_title="Top-1 accuracy (%)", template="plotly_white")
    fig.update_xaxes(type="log", **(size_ticks(shown[x]) if x == "size_bytes" else {}))
    _note_missing(fig, len(df) - len(shown), len(shown), x)
    return fig


def _point_traces(shown: pd.DataFrame, x: str) -> list[go.Scatter]:
    """One marker trace per kind of point, then the Pareto frontier as a line through its points."""
    template = _hover(x)
    traces = []
    for kind, colour in KIND_COLOURS.items():
        part = shown["kind"] == kind
        if part.any():
            marker = {"color": colour, "size": 14 if kind in ("base", "chain") else 9, "symbol": "star" if kind == "chain" else "circle"}
            traces.append(go.Scatter(x=shown.loc[part, x], y=shown.loc[part, "accuracy"], mode="markers", name=kind, marker=marker,
                                     customdata=shown.loc[part, HOVER_COLUMNS].values, hovertemplate=template))
    front = shown[pareto_front(shown, x)].sort_values(x)
    if len(front):
        traces.append(go.Scatter(x=front[x], y=front["accuracy"], mode="lines+markers", name="Pareto frontier",
                                 line={"color": "#2ca02c", "dash": "dash"}, marker={"symbol": "circle-open", "size": 18, "color": "#2ca02c"},
                                 customdata=front[HOVER_COLUMNS].values, hovertemplate=template))
    return traces


def _note_missing(fig: go.Figure, missing: int, shown: int, x: str) -> None:
    """Say which points are not drawn: mid-plot when none is, else above the plot's top right corner, clear of
    the axis titles and of the legend."""
    if shown == 0:
        text, place = f"No point of this record has a {AXES[x][0]} measurement; choose another axis.", {"x": 0.5, "y": 0.5}
    elif missing:
        text = f"{plural(missing, 'point')} without a {AXES[x][0]} measurement not shown"
        place = {"x": 1.0, "y": 1.0, "xanchor": "right", "yanchor": "bottom"}
    else:
        return
    fig.add_annotation(text=text, xref="paper", yref="paper", showarrow=False, **place,
                       font={"size": 14 if shown == 0 else 11, "color": "#666666"})


# the chain step by step: (metrics key, row title, hover format); one row each, so no axis mixes units
STEP_ROWS = (("accuracy", "Top-1 accuracy (%)", "%{y:.2f}%"), ("bitops", "BitOps per image (log)", "%{y:.3s}"),
             ("size_bytes", "Model size (log)", "%{text}"))  # a size as size_text words it (binary units)
STEP_COLOURS = {"accuracy": "#1f77b4", "bitops": "#d62728", "size_bytes": "#2ca02c"}


@drawn_literally
def chain_steps_figure(record: dict) -> go.Figure:
    """Accuracy, BitOps and size of the base and after every chain step, one row each on a shared x axis. The
    accuracy axis spans the values drawn (a 1.7-point drop shows), BitOps and size are on log axes of their own."""
    steps = [("base", record["base_metrics"])] + [(f"+ {s['chain'][-1]}" if s.get("metrics") else f"+ {s['chain'][-1]} ({s['status']})",
                                                   s.get("metrics") or {}) for s in record["chain_steps"]]
    labels = [label for label, _ in steps]
    fig = make_subplots(rows=len(STEP_ROWS), cols=1, shared_xaxes=True, vertical_spacing=0.06)
    for row, (key, title, value) in enumerate(STEP_ROWS, 1):
        values = [metrics.get(key) for _, metrics in steps]
        words = {"text": [size_text(v) if v is not None else "" for v in values]} if key == "size_bytes" else {}  # "1.1 MiB", not "1.19MB"
        fig.add_trace(go.Scatter(x=labels, y=values, name=title, mode="lines+markers+text", line={"color": STEP_COLOURS[key]},
                                 textposition="top center", showlegend=False, texttemplate=value, **words,
                                 hovertemplate=f"%{{x}}<br>{value}<extra></extra>"), row=row, col=1)
        fig.update_yaxes(title_text=title, row=row, col=1, **_step_axis(key, [m.get(key) for _, m in steps]))
    fig.update_layout(title=f"The chain step by step: {chain_text(record['chain'])} (test split)", template="plotly_white",
                      height=620, margin={"t": 60})
    fig.update_xaxes(title_text="after step", row=len(STEP_ROWS), col=1)
    return fig


def _step_axis(key: str, values: list) -> dict:
    """Accuracy: a linear axis around the values with room for the labels; costs: a log axis with SI ticks (sizes:
    `size_ticks`) and room above the highest value for its label (autoranged, the base's "3.04G" and "1.19MB" were cut
    by the row above)."""
    if key != "accuracy":
        drawn = [v for v in values if v]  # a log axis holds positive values only
        ticks = size_ticks(drawn) if key == "size_bytes" else {"tickformat": ".3~s"}
        if not drawn:
            return {"type": "log", **ticks}
        low, high = math.log10(min(drawn)), math.log10(max(drawn))
        pad = max(0.3, (high - low) * 0.15)  # decades
        return {"type": "log", **ticks, "range": [low - pad, high + pad]}
    drawn = [v for v in values if v is not None]
    low, high = (min(drawn), max(drawn)) if drawn else (0.0, 100.0)
    pad = max(0.5, (high - low) * 0.25)
    return {"range": [low - pad, high + pad]}


def size_ticks(sizes) -> dict:
    """Ticks of a log axis of sizes in bytes, worded as every table and the report word sizes (`size_text`: "100.0 KiB",
    where plotly's SI ticks read "100k" in decimal kilobytes): 1, 10 and 100 of each binary unit, with 2 and 5 between
    when the sizes span a decade or less (more would crowd a chain row's 200 px), from a decade below the smallest size
    to a decade above the largest."""
    drawn = [float(v) for v in sizes if v and v > 0]
    if not drawn:
        return {}
    low, high = min(drawn), max(drawn)
    steps = (1, 2, 5) if high <= 10 * low else (1,)
    ticks = sorted(unit * 10**decade * step for unit in (1, 2**10, 2**20, 2**30, 2**40) for decade in range(3) for step in steps)
    kept = [tick for tick in ticks if low / 10 <= tick <= high * 10]
    return {"tickvals": kept, "ticktext": [size_text(tick) for tick in kept]}


def _pair_cells(record: dict) -> dict[tuple[str, str], tuple[float | None, str]]:
    """(row method first, column method second) -> (mean advantage of that order, cell text)."""
    cells = {}
    for o in record["outcomes"]:
        a, b = o["first"], o["second"]
        if o["incompatible"]:
            cells[a, b] = cells[b, a] = (None, "incompatible")
            continue
        weak = " (weak)" if o["weak_evidence"] else ""
        for first, second, diff in ((a, b, o["mean_diff"]), (b, a, -o["mean_diff"])):
            verdict = "tie" if o["tie"] else ("★ first" if o["winner"] == first else "")
            notes = f"{verdict}{weak}".strip()
            spread = f"± {_number(o['spread'])}"
            if o.get("low") is not None:
                low, high = (o["low"], o["high"]) if first == a else (-o["high"], -o["low"])
                spread = f"[{_number(low, signed=True)}, {_number(high, signed=True)}]"
            cells[first, second] = (diff, f"{_number(diff, signed=True)} {spread}" + (f"<br>{notes}" if notes else ""))
    return cells


def _number(value: float, signed: bool = False) -> str:
    """Two decimals for accuracy-sized numbers, three significant digits for BitOps-sized ones."""
    sign = "+" if signed else ""
    return f"{value:{sign}.2f}" if abs(value) < 1000 else f"{value:{sign}.3g}"


@drawn_literally
def pair_matrix_figure(record: dict) -> go.Figure:
    """Heatmap: row method applied first, column second, minus the reverse order (positive = row first is better)."""
    methods = list(record["spec"]["methods"])
    cells = _pair_cells(record)
    z = [[cells.get((row, col), (None, ""))[0] for col in methods] for row in methods]
    text = [["—" if row == col else cells.get((row, col), (None, "not run"))[1] for col in methods] for row in methods]
    objective = record["spec"]["objective"]
    fig = go.Figure(go.Heatmap(z=z, x=methods, y=methods, text=text, texttemplate="%{text}", colorscale="RdBu", zmid=0,
                               colorbar={"title": {"text": OBJECTIVE_UNITS.get(objective, objective)}},
                               hovertemplate="%{y} then %{x}<br>advantage over the reverse: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=f"Pair outcomes ({objective}): row first, then column, minus the reverse order<br>"
                            f"<sup>{_winner_key(record)}</sup>",
                      xaxis_title="applied second", yaxis_title="applied first", template="plotly_white")
    fig.update_yaxes(autorange="reversed")
    return fig


def _winner_key(record: dict) -> str:
    """What the stars in the matrix mean, or why there are none."""
    if any(o["winner"] for o in record["outcomes"] if not o["incompatible"]):
        return "★ first: the row method should come first (its interval excludes 0 and it clears the minimum margin)"
    return "No pair was decided (every interval contains 0 or the margin is too small), so no cell has a ★"


def _quote(name: str) -> str:
    return '"' + str(name).replace("\\", "\\\\").replace('"', '\\"') + '"'


def chain_links(record: dict) -> set[tuple[str, str]]:
    chain = record["chain"]
    return set(zip(chain[:-1], chain[1:]))


def precedence_dot(record: dict) -> str:
    """Graphviz DOT of the precedence graph: kept edges with margins, dropped edges, the chain in order."""
    lines = ["digraph precedence {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fillcolor="#f2f2f2", fontname="Helvetica"];',
             '  edge [fontname="Helvetica", fontsize=10];']
    lines += [_dot_node(name, record["chain"]) for name in record["spec"]["methods"]]
    lines += [_dot_edge(group, *edge) for group, edges in edge_groups(record).items() for edge in edges]
    return "\n".join(lines + ["}"])


def _dot_node(name: str, chain: list[str]) -> str:
    if name not in chain:
        return f"  {_quote(name)};"
    return f'  {_quote(name)} [label={_quote(f"{chain.index(name) + 1}. {name}")}, fillcolor="#fde0dd", color="{CHAIN_COLOUR}", penwidth=2.5];'


DOT_EDGE_STYLES = {"chain order": f'color="{CHAIN_COLOUR}", fontcolor="{CHAIN_COLOUR}", penwidth=2.5',
                   "kept edge": f'color="{EDGE_COLOUR}"', "weak edge": f'style=dashed, color="{EDGE_COLOUR}"',
                   "dropped edge": f'style=dotted, color="{DROPPED_COLOUR}", fontcolor="{DROPPED_COLOUR}"'}


def _dot_edge(group: str, before: str, after: str, label: str, weak: bool) -> str:
    dashed = "style=dashed, " if weak and group == "chain order" else ""
    return f"  {_quote(before)} -> {_quote(after)} [label={_quote(label)}, {dashed}{DOT_EDGE_STYLES[group]}];"


def edge_groups(record: dict) -> dict[str, list[tuple[str, str, str, bool]]]:
    """(before, after, label, weak) of every edge, by how it is drawn: chain order, kept, weak or dropped."""
    links, groups = chain_links(record), {"chain order": [], "kept edge": [], "weak edge": [], "dropped edge": []}
    for edge in record["edges"]:
        pair, weak = (edge["before"], edge["after"]), bool(edge.get("weak"))
        group = "chain order" if pair in links else ("weak edge" if weak else "kept edge")
        interval = f" [{edge['low']:.2f}, {edge['high']:.2f}]" if edge.get("low") is not None else ""
        groups[group].append((*pair, f"{edge['margin']:.2f}{interval}" + (" (weak)" if weak else ""), weak))
    kept = {(e["before"], e["after"]) for e in record["edges"]}
    groups["chain order"] += [(a, b, CHAIN_ONLY, False) for a, b in sorted(links - kept)]
    groups["dropped edge"] = [(e["before"], e["after"], f"dropped ({e['margin']:.2f})", False) for e in record["dropped_edges"]]
    return groups


EDGE_STYLES = {"chain order": {"color": CHAIN_COLOUR, "width": 3}, "kept edge": {"color": EDGE_COLOUR, "width": 1.5},
               "weak edge": {"color": EDGE_COLOUR, "width": 1.5, "dash": "dash"}, "dropped edge": {"color": DROPPED_COLOUR, "width": 1.5, "dash": "dot"}}


def precedence_caption(record: dict) -> str:
    """What the precedence graph draws, for the drawing at hand: which arrows are decided pairs and what their
    labels say, which only join the chain, and the weak and dropped ones."""
    groups = edge_groups(record)
    parts = ["Red and numbered: the recommended chain, left to right."]
    if groups["chain order"] or groups["kept edge"]:
        decided = [e for e in groups["chain order"] + groups["kept edge"] if e[2] != CHAIN_ONLY]
        if decided:
            parts.append("An arrow A → B labelled with a number: the pair was decided, A before B, by that mean margin "
                         "(accuracy points or the objective's unit), with its interval in brackets.")
        if any(e[2] == CHAIN_ONLY for e in groups["chain order"]):
            parts.append(f"An arrow labelled '{CHAIN_ONLY}': consecutive methods of the chain that no pair decision orders "
                         "(a tie); the search chose their order.")
    if groups["weak edge"] or any(e[3] for e in groups["chain order"]):
        parts.append("Dashed: weak evidence (one seed, or the mean within a standard error of the margin).")
    if groups["dropped edge"]:
        parts.append("Dotted red: dropped to break a cycle of pair decisions.")
    return " ".join(parts)


def chain_layout(record: dict) -> dict[str, tuple[float, float]]:
    """Left to right: the chain's methods in order on one line, methods outside it below."""
    chain = list(record["chain"])
    others = [m for m in record["spec"]["methods"] if m not in chain]
    position = {name: (float(index), 0.0) for index, name in enumerate(chain)}
    position |= {name: (index + 0.5, -1.0) for index, name in enumerate(others)}
    return position


@drawn_literally
def precedence_figure(record: dict) -> go.Figure:
    """The precedence graph with plotly, laid out left to right in the chain's order: arrows between neighbours run
    straight, longer ones arc above the line; labels sit on the arrows, method names below their nodes."""
    chain, position = record["chain"], chain_layout(record)
    fig = go.Figure()
    for group, edges in edge_groups(record).items():
        if edges:
            _draw_edges(fig, group, edges, position)
    names = list(position)
    labels = [f"{chain.index(n) + 1}. {n}" if n in chain else n for n in names]
    fig.add_trace(go.Scatter(x=[position[n][0] for n in names], y=[position[n][1] for n in names], mode="markers+text",
                             text=labels, textposition="bottom center", name="method", hoverinfo="text",
                             marker={"size": 26, "color": ["#fde0dd" if n in chain else "#f2f2f2" for n in names],
                                     "line": {"width": 2, "color": [CHAIN_COLOUR if n in chain else "#888888" for n in names]}}))
    width = max(len(names) - 1, 1)
    fig.update_layout(title=f"Precedence graph: {chain_text(chain)}", template="plotly_white", height=360,
                      xaxis={"visible": False, "range": [-0.6, width + 0.6]}, yaxis={"visible": False, "range": [-1.6, 1.4]},
                      legend={"orientation": "h", "y": -0.05})
    return fig


def _draw_edges(fig: go.Figure, group: str, edges, position) -> None:
    """Each edge as a line (through a point above the chain's line when it skips methods), an arrowhead at its end
    and its label at its highest point."""
    xs, ys = [], []
    colour = EDGE_STYLES[group]["color"]
    for before, after, label, _ in edges:
        (x0, y0), (x1, y1) = position[before], position[after]
        lift = 0.35 * (abs(x1 - x0) - 1) if y0 == y1 else 0.0  # neighbours: straight; a longer jump arcs over the nodes between
        middle = ((x0 + x1) / 2, (y0 + y1) / 2 + lift)
        xs += [x0, middle[0], x1, None]
        ys += [y0, middle[1], y1, None]
        fig.add_annotation(x=x1, y=y1, ax=middle[0], ay=middle[1], xref="x", yref="y", axref="x", ayref="y", showarrow=True,
                           arrowhead=3, arrowsize=1.5, standoff=16, arrowcolor=colour, text="")
        fig.add_annotation(x=middle[0], y=middle[1], text=label, showarrow=False, bgcolor="white", yshift=10,
                           font={"size": 11, "color": colour})
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=group, line=EDGE_STYLES[group], hoverinfo="skip"))

"""Charts and the meeting report, drawn from a small hand-made exploration record (sample_record.py)."""
from __future__ import annotations

import html
import io
import json
import math
import re

import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from ordercomp.report import charts
from ordercomp.exploration.results import chain_table, steps_table
from ordercomp.report.figures import STEP_FIGURES, applications, headline, share_text, size_text, smaller_text, speed_text
from ordercomp.report.meeting import evidence_sentence, meeting_report, results_csv
from ordercomp.report.verdict import settle_suggestion
from sample_record import BASE, CHAIN, METHODS, outcome, step, synthetic_record
from testkit import MARKUP, figure_texts

# The recommended chain's deployable file measured in its runtime after warm-up, next to the base's (issue 15, item 3)
SHIPPED = {"format": "onnx", "runtime": "onnxruntime 1.23 (CPUExecutionProvider)", "file_bytes": 15_400, "accuracy": 97.5,
           "latency_ms": {"1": 0.05, "32": 0.4}, "threads": 2, "cpu": {"model": "Intel Xeon (test)", "logical_cores": 2, "flags": ["avx2"]}, "speedup": {"1": 8.0, "32": 10.0},
           "size_ratio": 80.0, "base": {"format": "onnx", "file_bytes": 1_232_000, "accuracy": 98.0, "latency_ms": {"1": 0.4, "32": 4.0}}}


@pytest.fixture(scope="module")
def record() -> dict:
    return synthetic_record()


@pytest.fixture(scope="module")
def shipped_record() -> dict:
    return synthetic_record() | {"shipped": SHIPPED, "device": "cpu",
                                 "data": {"name": "digits", "classes": 10, "channels": 1, "input_size": 8, "train": 1257, "val": 180,
                                          "test": 360, "preprocessing": {}}}


def test_pareto_front_keeps_only_undominated_points():
    df = pd.DataFrame({"bitops": [10, 20, 15, 5, 20, math.nan, 30], "accuracy": [90, 95, 85, 80, 95, 99, 94]})
    assert charts.pareto_front(df, "bitops").tolist() == [True, True, False, True, True, False, False]


def test_tradeoff_points_average_seeds_and_mark_kinds(record):
    df = charts.tradeoff_points(record).set_index("label")
    assert df.loc["prune → quantize", "accuracy"] == pytest.approx(96.5)
    assert df.loc["prune → quantize", "seeds"] == 2 and df.loc["prune → quantize", "split"] == "val"
    assert "quantize → int8" not in df.index
    assert df["kind"].value_counts().to_dict() == {"pair": 11, "single": 4, "base": 1, "chain": 1}
    final = df.loc["chain: prune → quantize → early_exit → int8"]
    assert final["kind"] == "chain" and final["split"] == "test" and final["latency_ms"] == pytest.approx(0.1)
    assert "prune: ratio=0.5, importance=l2" in df.loc["prune → quantize", "config"]


def test_tradeoff_figure_is_log_scaled_with_a_frontier(record):
    fig = charts.tradeoff_figure(record, "bitops")
    assert [t.name for t in fig.data] == ["base", "single", "pair", "chain", "Pareto frontier"]
    assert fig.layout.xaxis.type == "log" and "BitOps" in fig.layout.xaxis.title.text
    assert fig.layout.yaxis.title.text == "Top-1 accuracy (%)" and fig.layout.title.text
    frontier = fig.data[-1]
    assert list(frontier.x) == sorted(frontier.x) and "customdata[3]" in frontier.hovertemplate
    assert len(fig.layout.annotations) == 0


def test_tradeoff_figure_notes_missing_latency_and_empty_state(record):
    fig = charts.tradeoff_figure(record, "latency_ms")
    assert [t.name for t in fig.data] == ["base", "chain", "Pareto frontier"]
    note = fig.layout.annotations[0]
    assert note.text == "15 points without a latency measurement not shown"
    # above the plot area (paper y 1 and up), not over the x axis's title below it (it sat at y -0.18)
    assert note.yref == "paper" and note.y >= 1 and note.yanchor == "bottom"
    empty = charts.tradeoff_figure(synthetic_record(latency=False), "latency_ms")
    assert len(empty.data) == 0 and "No point of this record" in empty.layout.annotations[0].text
    with pytest.raises(ValueError, match="choose one of bitops, size_bytes, latency_ms"):
        charts.tradeoff_figure(record, "flops")


def test_chain_steps_figure_gives_accuracy_bitops_and_size_an_axis_each(record):
    fig = charts.chain_steps_figure(record)
    assert [t.yaxis for t in fig.data] == ["y", "y2", "y3"]  # BitOps and bytes no longer share one axis
    assert [t.name for t in fig.data] == ["Top-1 accuracy (%)", "BitOps per image (log)", "Model size (log)"]
    assert list(fig.data[0].x) == ["base", "+ prune", "+ quantize", "+ early_exit", "+ int8"]
    assert fig.layout.yaxis2.type == "log" and fig.layout.yaxis3.type == "log" and fig.layout.yaxis.type != "log"
    # the accuracy axis spans the values drawn, so a drop of a point or two shows (it was fixed at 0..100)
    low, high = fig.layout.yaxis.range
    assert low > 90 and high < 100 and low < min(fig.data[0].y) and high > max(fig.data[0].y)


def test_pair_matrix_orients_differences_and_marks_cells(record):
    fig = charts.pair_matrix_figure(record)
    heat = fig.data[0]
    cell = lambda row, col: (heat.z[METHODS.index(row)][METHODS.index(col)], heat.text[METHODS.index(row)][METHODS.index(col)])
    assert cell("prune", "quantize") == (2.0, "+2.00 ± 0.50<br>★ first")
    assert cell("quantize", "prune")[0] == -2.0
    assert cell("quantize", "int8") == (None, "incompatible") and cell("int8", "quantize") == (None, "incompatible")
    assert cell("prune", "int8")[1].endswith("tie") and cell("early_exit", "int8")[1].endswith("★ first (weak)")
    assert cell("prune", "prune")[1] == "—"


def dot_statements(dot: str) -> tuple[dict, dict]:
    """The nodes ({name: attributes}) and edges ({(tail, head): attributes}) of a DOT graph of quoted names."""
    attributes = lambda text: {key: value.strip('"') for key, value in re.findall(r'(\w+)=("[^"]*"|[^,\]]+)', text)}
    nodes = {name: attributes(attrs) for name, attrs in re.findall(r'^\s*"([^"]+)" \[(.*)\];$', dot, re.M)}
    edges = {(tail, head): attributes(attrs) for tail, head, attrs in re.findall(r'^\s*"([^"]+)" -> "([^"]+)" \[(.*)\];$', dot, re.M)}
    return nodes, edges


def test_precedence_dot_shows_methods_dropped_edge_and_chain(record):
    dot = charts.precedence_dot(record)
    assert dot.startswith("digraph precedence {") and dot.endswith("}")
    nodes, edges = dot_statements(dot)
    assert {name: node["label"] for name, node in nodes.items()} == {name: f"{index}. {name}" for index, name in enumerate(CHAIN, 1)}
    assert set(edges) == {(e["before"], e["after"]) for e in record["edges"] + record["dropped_edges"]}
    assert {pair: edge["label"] for pair, edge in edges.items()} == {
        ("prune", "quantize"): "2.00", ("quantize", "early_exit"): "3.00", ("early_exit", "int8"): "1.50 (weak)",
        ("early_exit", "prune"): "dropped (0.80)"}
    # a weak edge and a dropped edge each look unlike a firm edge, and unlike each other
    firm, weak, dropped = (edges[pair].get("style", "solid") for pair in [("prune", "quantize"), ("early_exit", "int8"), ("early_exit", "prune")])
    assert len({firm, weak, dropped}) == 3 and firm == "solid"


def test_precedence_figure_draws_the_same_graph_left_to_right(record):
    fig = charts.precedence_figure(record)
    assert [t.name for t in fig.data] == ["chain order", "dropped edge", "method"]
    nodes = fig.data[-1]
    assert list(nodes.text) == ["1. prune", "2. quantize", "3. early_exit", "4. int8"]
    assert list(nodes.x) == sorted(nodes.x) and len(set(nodes.y)) == 1  # the chain in order on one line (it was a circle)
    assert nodes.textposition == "bottom center"  # names under the nodes, labels of the arrows above them
    labels = {a.text: a for a in fig.layout.annotations if a.text}
    assert "dropped (0.80)" in labels and "1.50 (weak)" in labels
    # the dropped edge early_exit -> prune skips quantize: it arcs above the line instead of crossing quantize's node
    assert labels["dropped (0.80)"].y > nodes.y[0]


def test_the_graph_caption_says_what_its_edges_carry(record):
    caption = charts.precedence_caption(record)
    assert "labelled with a number: the pair was decided" in caption and "Dashed: weak evidence" in caption
    assert "Dotted red: dropped" in caption and "chain order" not in caption  # every chain link here is a decided pair
    ties = synthetic_record()
    ties["outcomes"] = [o | {"winner": None, "tie": True} for o in ties["outcomes"]]
    ties["edges"], ties["dropped_edges"] = [], []
    # every pair a tie: the edges are the chain's links and say so, not "the mean margin" (main labelled them "chain")
    caption = charts.precedence_caption(ties)
    assert "labelled with a number" not in caption and "'chain order': consecutive methods of the chain that no pair" in caption
    assert {a.text for a in charts.precedence_figure(ties).layout.annotations if a.text} == {"chain order"}


def test_the_pair_matrix_title_promises_stars_only_where_it_draws_them(record):
    fig = charts.pair_matrix_figure(record)
    stars = sum("★" in cell for row in fig.data[0].text for cell in row)
    assert stars == 4 and "★ first: the row method should come first" in fig.layout.title.text
    ties = synthetic_record()
    ties["outcomes"] = [o | {"winner": None, "tie": True} for o in ties["outcomes"]]
    fig = charts.pair_matrix_figure(ties)
    assert not any("★" in cell for row in fig.data[0].text for cell in row)
    assert "no cell has a ★" in fig.layout.title.text  # main promised "★ marks the winner" over a matrix of ties


def first_screen(report: str) -> str:
    """The text of the report before its first section heading."""
    return re.sub(r"<[^>]+>", " ", html.unescape(report.split("<h2>", 1)[0].split("<body>", 1)[1]))


def test_report_is_one_offline_html_file_with_the_headlines(record):
    report = meeting_report(record)
    assert report.startswith("<!DOCTYPE html>") and report.rstrip().endswith("</html>")
    assert not re.search(r"<script[^>]*\ssrc=", report) and not re.search(r"<link[^>]*href=[\"']?https?:", report)
    assert report.count(get_plotlyjs()) == 1
    assert "prune → quantize → early_exit → int8" in report and " -&gt; " not in report and " -> " not in first_screen(report)
    screen = first_screen(report)
    # no shipped file in this record: the eager simulation's figures, labelled as such
    assert "What it buys (PyTorch eager simulation)" in screen
    assert "16.0× smaller" in screen and "-4.00 points" in screen and "4.00× faster" in screen and "16.0× fewer" in screen
    for title in ("Terms", "Precedence graph", "Pair matrix", "Trade-offs", "Exhaustive ranking of every order", "Notes", "Run settings"):
        assert f"<h2>{title}</h2>" in report
    assert "dropped to break a cycle" in report and "weak evidence (early_exit / int8)" in report
    assert "quantize / int8 could not be compared" in report


def test_the_reports_first_screen_tells_a_manager_what_the_shipped_file_buys(shipped_record):
    report = meeting_report(shipped_record, finished=1_780_000_000)  # 28 May 2026
    screen = first_screen(report)
    assert "28 May 2026" in screen and "device cpu" in screen
    assert ("were compared, every pair in both orders and every one of the 24 whole orders: 36 method applications over 2 "
            "seeds") in screen and "on digits: 10 classes, 8×8 px" in screen
    assert ("First structured pruning (prune), then quantization-aware training (quantize), then early exit (early_exit), "
            "and last int8 post-training quantization (int8).") in screen
    # the shipped file in its runtime: size, speed at both batch sizes, accuracy; no eager simulation in the headline
    assert "15.0 KiB" in screen and "ONNX file, 80.0× smaller than the base's 1.2 MiB" in screen
    assert "8.00× faster" in screen and "10.0× faster" in screen and "onnxruntime 1.23" in screen and "Intel Xeon (test)" in screen
    assert "97.50 %" in screen and "-0.50 points against the base's 98.00 %" in screen and "simulation" not in screen
    assert "How sure." in screen and "Next step." in screen and "more seeds" in screen
    assert "BitOps</b>: bit operations per image" in report and "<b>prune</b> (structured pruning): " in report
    settings = dict(re.findall(r"<tr>\s*<td>([^<]+)</td>\s*<td>([^<]*)</td>", report.split("<h2>Run settings</h2>")[1]))
    assert settings["fine-tuning per step"] == "0.3 epochs, learning rate 0.002" and settings["device"] == "cpu"
    assert settings["method settings"].startswith("prune: ratio 0.5, importance l2; quantize: weight_bits 8")
    assert not re.search(r"\b(True|False)\b|[{}]", report.split("<h2>Precedence graph</h2>")[0].split("<body>")[1])  # no Python, no JSON


def test_report_of_a_chain_that_stopped_early():
    record = synthetic_record()
    record["chain_steps"][-1] = step(CHAIN, status="incompatible")
    record["exhaustive"] = None
    report = meeting_report(record)
    assert "Figures after prune → quantize → early_exit: the chain stopped early" in report
    assert "8.00× smaller" in report and "-3.00 points" in report and "Exhaustive ranking" not in report
    assert "The chain stopped at prune → quantize → early_exit → int8 (incompatible" in report


def test_results_csv_holds_every_step_and_the_chain_on_the_test_split_rounded(record):
    table = pd.read_csv(io.BytesIO(results_csv(record)), keep_default_na=False)
    assert len(table) == len(record["steps"]) + 1 + len(record["chain_steps"])
    assert list(table.columns[:4]) == ["chain", "split", "seed", "status"]
    assert list(table["split"]) == ["val"] * len(record["steps"]) + ["test"] * (1 + len(record["chain_steps"]))
    assert (table["status"] == "incompatible").sum() == 2 + sum(s["status"] == "incompatible" for s in record["chain_steps"])
    chain = table[table["split"] == "test"]
    assert list(chain["chain"]) == ["base"] + [" → ".join(s["chain"]) for s in record["chain_steps"]]
    timed = [s for s in record["chain_steps"] if (s.get("metrics") or {}).get("latency_ms_b1") is not None]
    assert (chain["latency_runtime"] == "eager").sum() == 1 + len(timed)  # latency only where measured (the base too), and where it was
    measured = table[table["status"] == "ok"]
    assert all(float(b).is_integer() for b in measured["size_bytes"]) and all(float(b).is_integer() for b in measured["bitops"])
    assert all(round(float(a), 2) == float(a) for a in measured["accuracy"])


def test_steps_csv_holds_the_base_so_a_step_reads_against_it_as_the_chain_table_does(record):
    """steps.csv held the exploration's steps and the chain's but not the base: no ratio against the base could be
    taken from the file alone, though the chain table beside it on the pages and in the report starts with it."""
    table = pd.read_csv(io.BytesIO(results_csv(record)))
    shown = chain_table(record["base_metrics"], record["chain_steps"]).set_index("step")
    base, last = table[table["chain"] == "base"].iloc[0], table.iloc[-1]
    assert (base["split"], base["status"], base["latency_runtime"]) == ("test", "ok", "eager")
    assert base["accuracy"] == shown.loc["base", "accuracy %"] and base["macs"] == shown.loc["base", "MACs"]
    assert round(base["size_bytes"] / 1024, 1) == shown.loc["base", "counted KiB"]
    assert f"{base['bitops'] / last['bitops']:.1f}x" == shown.iloc[-1]["BitOps reduction"] == "16.0x"


def test_the_step_by_step_figures_beside_the_shipped_headline_say_they_are_not_the_files(shipped_record):
    """The dashboard's default run: the headline gave the shipped ONNX file at 124.7 KiB (measured 0.0592 ms), and the
    report's chain table and charts below it read "size KiB 14.6" and "latency ms (b=1) 0.71" with no word that those are
    the counted storage and the eager simulation; its MACs were truncated (162999) where steps.csv rounds (163000)."""
    report = meeting_report(shipped_record)
    note = html.escape(STEP_FIGURES)
    for section in ("Trade-offs", "The chain applied to the base (test split)"):
        assert note in report.split(f"<h2>{section}</h2>", 1)[1].split("<h2>", 1)[0], section
    last = shipped_record["chain_steps"][-1] | {"metrics": shipped_record["chain_steps"][-1]["metrics"] | {"macs": 162999.9996}}
    table = chain_table(shipped_record["base_metrics"], [last])
    assert list(table.columns) == ["step", "accuracy %", "params", "counted KiB", "MACs", "BitOps", "BitOps reduction",
                                   "eager ms, b=1", "eager ms, b=32"]
    assert table["MACs"].iloc[-1] == 163000 == pd.read_csv(io.StringIO(steps_table([last], "test").to_csv(index=False)))["macs"].iloc[0]


@pytest.mark.parametrize("speedup, text", [(1 / 2.333, "2.33× slower"), (1.0, "1.00× faster"), (2.0, "2.00× faster"),
                                            (28.8, "28.8× faster"), (None, "n/a")])
def test_speed_headline_says_slower_or_faster(speedup, text):
    assert speed_text(speedup) == text


@pytest.mark.parametrize("ratio, text", [(80.0, "80.0× smaller"), (1.0, "1.00× smaller"), (1 / 1.05, "1.05× larger"), (None, "n/a")])
def test_size_headline_says_smaller_or_larger(ratio, text):
    assert smaller_text(ratio) == text


def test_a_shipped_file_larger_than_the_bases_is_called_larger():
    """A ShuffleNetV2 exploration (sparsify -> quantize, shipped as float ONNX) read "1.5 MiB — ONNX file, 0.95×
    smaller than the base's 1.4 MiB"."""
    larger = SHIPPED | {"file_bytes": 1_300_000, "size_ratio": 1_232_000 / 1_300_000}
    [size] = [item for item in headline({"shipped": larger, "bitops_reduction": 64.0}) if item.label == "Shipped file size"]
    assert size.detail == "ONNX file, 1.06× larger than the base's 1.2 MiB"


def test_chain_steps_axis_uses_short_si_ticks_not_raw_billions(record):
    kind = re.fullmatch(r"[^a-z%]*([a-z%])", charts.chain_steps_figure(record).layout.yaxis2.tickformat)  # d3-format: the type is the last letter
    assert kind and kind.group(1) == "s"  # SI prefix: 1.02G, not 1020000000


def test_every_size_on_the_tradeoff_charts_reads_in_the_binary_units_and_figures_of_the_tables(record):
    """The Trade-offs page hovered the base at "80kB" and ticked its size axes "10k", "100k" (plotly's SI format, decimal
    kilobytes), where the chain table beside them and the report read "78.1" counted KiB and "78.1 KiB"."""
    fig = charts.tradeoff_figure(record, "size_bytes")
    for trace in fig.data:
        hovered = [re.sub(r"%\{customdata\[(\d)\]\}", lambda m: str(point[int(m.group(1))]), trace.hovertemplate)
                   for point in trace.customdata]
        assert [f"model size: {size_text(x)}<br>" in text for x, text in zip(trace.x, hovered)] == [True] * len(trace.x)
        assert "kB" not in trace.hovertemplate and ":.3s" not in trace.hovertemplate
    base = next(trace for trace in fig.data if trace.name == "base")
    assert base.customdata[0][4] == "78.1 KiB" == f"{chain_table(record['base_metrics'], [])['counted KiB'][0]} KiB"
    steps = charts.chain_steps_figure(record)
    for axis, sizes in ((fig.layout.xaxis, [x for trace in fig.data for x in trace.x]), (steps.layout.yaxis3, steps.data[2].y)):
        assert list(axis.ticktext) == [size_text(tick) for tick in axis.tickvals]
        assert axis.tickvals[0] <= min(sizes) and axis.tickvals[-1] >= max(sizes)  # ticks on both sides of what is drawn
        assert {"1.0 KiB", "10.0 KiB", "100.0 KiB"} <= set(axis.ticktext)
    assert charts.size_ticks([30_000, 80_000])["ticktext"] == ["5.0 KiB", "10.0 KiB", "20.0 KiB", "50.0 KiB", "100.0 KiB", "200.0 KiB",
                                                              "500.0 KiB"]  # within a decade, 2 and 5 between


def test_the_chain_steps_labels_have_room_in_their_rows_and_sizes_read_in_the_units_of_every_page(record):
    """The dashboard's default run: the base's labels "3.04G" and "1.19MB" were cut off by the row above (an autoranged log
    axis ends at the highest point), and "1.19MB" stood for the base that the headline and Model & data call "1.1 MiB"."""
    fig = charts.chain_steps_figure(record)
    for axis, trace in ((fig.layout.yaxis2, fig.data[1]), (fig.layout.yaxis3, fig.data[2])):
        assert axis.range is not None and axis.range[1] >= math.log10(max(trace.y)) + 0.3, trace.name
        assert axis.range[0] <= math.log10(min(trace.y)) - 0.3, trace.name
    sizes = fig.data[2]
    assert list(sizes.text) == [size_text(v) for v in sizes.y] and sizes.text[0] == "78.1 KiB"
    assert "kB" not in sizes.texttemplate and "kB" not in sizes.hovertemplate


OTHER, THIRD = ["quantize", "prune", "early_exit", "int8"], ["prune", "early_exit", "quantize", "int8"]


def searched(record, *, separated=False, probability=0.41, inseparable=(OTHER, THIRD), behind=0.31):
    """The record as the default search leaves it: three whole orders at the full budget, raced on 2 extra seeds."""
    rows = [{"chain": chain, "score": score, "se": 0.4, "seeds": seeds, "probability": p, "status": status}
            for chain, score, seeds, p, status in ((CHAIN, 95.0, 4, probability, "recommended"), (OTHER, 94.8, 4, 0.35, "not separated"),
                                                   (THIRD, 94.5, 3, 0.24, "not separated"))]
    return record | {"exhaustive": None, "search": {
        "strategy": "surrogate", "applications_per_seed": 32, "budget_per_seed": 32, "orders": rows, "failed": [], "screen": None,
        "confidence": 0.95, "applications": {"per_seed": 32, "screen": 64, "confirm": 0, "race": 12, "total": 76, "cost": 76,
                                             "pairwise": 32, "exhaustive": 128, "share_of_exhaustive": 76 / 128},
        "verdict": {"chain": CHAIN, "evaluated": 3, "probability": probability, "separated": separated,
                    "inseparable": [] if separated else [list(c) for c in inseparable], "extra_seeds": [2, 3],
                    "behind_at_most": None if separated else {"chain": OTHER, "points": behind, "lower": 0.2, "seeds": 4}, "margin": 0.5}}}


def test_the_sentence_says_how_sure_the_search_is_which_orders_are_within_noise_and_what_it_cost(record):
    sentence = evidence_sentence(searched(record))
    assert sentence == ("The recommended order is the best of the 3 evaluated with probability 41%; it cannot be separated from "
                        "quantize → prune → early_exit → int8; prune → early_exit → quantize → int8: by a 95% paired interval "
                        "over seeds and images none of them is more than 0.31 points better, within the 0.5 points that count, "
                        "so any of them is a sound choice. 76 method applications were spent (32 per seed for "
                        "the search, 12 on extra seeds for the contenders), 59% of exhaustive (128); 4 more applied the chain "
                        "to the base on the test split.")
    report = meeting_report(searched(record))
    assert html.escape(sentence) in report and "P(best)" in report and "not separated" in report


def test_an_order_that_could_be_much_better_leaves_the_choice_open_instead_of_calling_either_sound(record):
    """A held-out setting (stop 33): the race could not separate two orders and the sentence called either a sound
    choice; on 8 fresh seeds the recommended one was 13.8 points worse. Beyond the margin that counts, it says so."""
    sentence = evidence_sentence(searched(record, behind=10.8))
    assert ("it cannot be separated from quantize → prune → early_exit → int8; prune → early_exit → quantize → int8: by a 95% "
            "paired interval over seeds and images quantize → prune → early_exit → int8 (0.20 points behind on the 4 seeds both were "
            "measured on) could be up to 10.80 points better, "
            "more than the 0.5 points that count, so the choice among them is open; more seeds would settle it.") in sentence
    assert "sound choice" not in sentence
    ahead = searched(record, behind=10.8)
    ahead["search"]["verdict"]["behind_at_most"]["lower"] = -0.2  # it scored better on the seeds both were measured on
    assert "int8 (0.20 points ahead on the 4 seeds both were measured on) could be up to 10.80" in evidence_sentence(ahead)


def test_an_order_measured_on_one_seed_beside_the_recommended_one_is_said_to_be_unbounded_by_that_seed(record):
    """Stop 44's walk (a user's CNN, 2 seeds): orders the first seed chose were measured on one other seed, with their
    per-image evidence, and the sentence blamed "one seed and no per-image evidence" beside a pair table of 144 images
    each. The race's intervals need two seeds both orders were measured on, whatever the images say."""
    one_seed = searched(record)
    one_seed["search"]["verdict"]["behind_at_most"] = {"chain": OTHER, "points": None, "lower": 25.69, "seeds": 1}
    sentence = evidence_sentence(one_seed)
    assert ("it cannot be separated from quantize → prune → early_exit → int8; prune → early_exit → quantize → int8: "
            "quantize → prune → early_exit → int8 (25.69 points behind on the 1 seed both were measured on) could be better "
            "by any amount: one seed draws no interval; more seeds would settle it.") in sentence
    assert "per-image" not in sentence and settle_suggestion(one_seed["search"])


def test_the_reports_next_step_for_an_open_choice_is_to_settle_it_not_to_take_the_order_as_a_default(record):
    """Stop 44's walk: 'How sure' said an order could be better by any amount, and 'Next step' right below it called the
    recommended order a reasonable default, the pairs being about as good either way; the Order page and the CLI offered
    to settle it."""
    shown = lambda result: html.unescape(meeting_report(result)).partition("Next step.</b> ")[2].partition("</p>")[0]
    opened = searched(record, behind=2.4)
    assert shown(opened) == ("An order could still be better than the recommended one by more than the 0.5 points that count: "
                             f"settle the choice before relying on the order (the dashboard's Settle it on the Order page, or "
                             f"the same command with --settle {settle_suggestion(opened['search'])}; nothing already run is "
                             "repeated).")
    assert "settle" not in shown(searched(record, behind=0.31)).lower()  # a sound choice: as before


def test_the_reports_title_names_the_model_and_data_not_the_servers_paths(shipped_record):
    """Stop 44's walk: a zip uploaded to the dashboard titled the report 'smallcnn on /srv/.../store/datasets/23ae221d53923473/
    digits16', the server's folder named by the upload's hash; the CLI's summary says 'imagefolder:digits16'."""
    uploaded = shipped_record | {"spec": shipped_record["spec"] | {"model": "/srv/models/nets.py:SmallCNN",
                                                                   "data": "/srv/store/datasets/23ae221d53923473/digits16"},
                                 "data": shipped_record["data"] | {"name": "imagefolder:digits16"}}
    report = meeting_report(uploaded)
    assert "<h1>Order of compression: nets.py:SmallCNN on imagefolder:digits16</h1>" in report
    assert "23ae221d53923473" not in report.partition("<h1>")[2].partition("</h1>")[0]


def test_an_order_far_behind_that_could_not_be_separated_is_not_called_a_sound_choice(record):
    """Stop 35's held-out digits_cnn setting: after settling, the sentence called any of the inseparable orders a sound
    choice, one of them 5.7 points behind on 9 seeds (its 99% interval still reached 0). None of them could be much
    better than the recommended one, so it is sound; that one could be much worse, so not every one is."""
    settled = searched(record)
    settled["search"]["verdict"] |= {"confidence": 0.99, "gaps": [
        {"chain": OTHER, "lower": 0.2, "better_at_most": 0.31, "worse_at_most": 0.45, "seeds": 9},
        {"chain": THIRD, "lower": 5.7, "better_at_most": 0.0, "worse_at_most": 11.2, "seeds": 9}]}
    sentence = evidence_sentence(settled)
    assert ("by a 99% paired interval over seeds and images none of them is more than 0.31 points better, within the 0.5 "
            "points that count, so the recommended order is a sound choice, but not every one of them: prune → early_exit → "
            "quantize → int8 (5.70 points behind on the 9 seeds both were measured on) could be up to 11.20 points worse.") in sentence
    assert "any of them is a sound choice" not in sentence
    settled["search"]["verdict"]["gaps"][0]["worse_at_most"] = 0.8
    assert "int8 (5.70 points behind on the 9 seeds both were measured on) could be up to 11.20 points worse (and 1 more " \
           "could be more than 0.5 points worse)." in evidence_sentence(settled)
    settled["search"]["verdict"]["gaps"] = [gap | {"worse_at_most": 0.4} for gap in settled["search"]["verdict"]["gaps"]]
    assert "within the 0.5 points that count, so any of them is a sound choice." in evidence_sentence(settled)


def test_settling_that_left_the_choice_open_says_what_it_spent(record):
    settled = searched(record, behind=2.4)
    settled["search"]["verdict"] |= {"settle": {"budget": 200, "spent": 96, "seeds": 6}, "confidence": 0.99}
    settled["search"]["applications"] |= {"settle": 96, "total": 172}
    sentence = evidence_sentence(settled)
    assert "by a 99% paired interval over seeds and images" in sentence  # the stricter interval settling stopped on
    assert ("so the choice among them is open, even after 6 more seeds (96 applications) of settling; more seeds would "
            "settle it.") in sentence
    assert "172 method applications were spent (32 per seed for the search, 12 on extra seeds for the contenders, 96 on " \
           "more seeds to settle the choice)" in sentence


def test_a_rerun_that_would_settle_an_open_choice_gets_eight_more_seeds_for_every_order_in_contention(record):
    """The three orders share prune's prefix: 4 + 4 + 3 applications per seed; a rerun already allowed 200 keeps them."""
    assert settle_suggestion(searched(record, behind=2.4)["search"]) == 8 * 11
    again = searched(record, behind=2.4)
    again["search"]["verdict"]["settle"] = {"budget": 200, "spent": 200, "seeds": 14}
    assert settle_suggestion(again["search"]) == 200 + 8 * 11
    assert settle_suggestion(searched(record, behind=0.31)["search"]) is None  # within the margin: a sound choice
    assert settle_suggestion(searched(record, separated=True)["search"]) is None
    assert settle_suggestion({"strategy": "pairwise"}) is None


def test_a_record_without_the_bound_says_only_that_the_orders_are_within_noise(record):
    old = searched(record)
    del old["search"]["verdict"]["behind_at_most"], old["search"]["verdict"]["margin"]
    sentence = evidence_sentence(old)
    assert "int8: the top orders are within noise of each other. 76 method" in sentence and "sound choice" not in sentence


def test_the_cost_of_a_one_seed_search_says_where_the_applications_went(record):
    one_seed = searched(record)
    one_seed["search"]["applications"] |= {"per_seed": 52, "search_seeds": 1, "screen": 52 + 16, "confirm": 16, "total": 96}
    one_seed["search"]["screened_orders"] = [{"chain": CHAIN, "score": 95.0, "se": 0.0, "seeds": 1}] * 18
    assert ("96 method applications were spent (52 on the first seed for the pairs and a search of 18 orders, 16 for the "
            "pairs on the other seeds, 16 measuring the search's best 3 there, 12 on extra seeds for the contenders)"
            in evidence_sentence(one_seed))


def test_the_cost_sentence_adds_up_to_the_application_count_stated_beside_it(record):
    """The dashboard's default run: the Order page's caption and the report's first screen said "124 method applications",
    and the sentence under them "120 method applications were spent (...)": the 4 that applied the chain on the test split
    were in one count and not the other, and nothing said so."""
    run = searched(record)
    run["search"]["applications"] |= {"total": len(run["steps"])}  # as a real record: every step it ran, on the validation split
    sentence = evidence_sentence(run)
    spent = f"{len(run['steps'])} method applications were spent"
    chain = f"; {len(run['chain_steps'])} more applied the chain to the base on the test split."
    assert spent in sentence and chain in sentence
    assert len(run["steps"]) + len(run["chain_steps"]) == applications(run)  # the count on the pages and in the report
    assert f"{applications(run)} method applications" in first_screen(meeting_report(run))


def test_a_separated_order_is_said_to_be_better_than_every_other(record):
    sentence = evidence_sentence(searched(record, separated=True, probability=0.97))
    assert "best of the 3 evaluated with probability 97%; every other evaluated order is worse by a paired interval" in sentence
    assert "sound choice" not in sentence


def test_the_sentence_follows_the_pair_rule_when_every_pair_is_a_tie(record):
    """Issue 17: the sentence said 'the evidence supports it' when one whole order scored a standard error ahead, while every
    pair was a tie. Without a race's verdict, only the pair decisions speak, and here they decide nothing."""
    ties = [o | {"winner": None, "tie": True, "weak_evidence": False} for o in record["outcomes"]]
    old_search = {"strategy": "surrogate", "applications_per_seed": 32, "budget_per_seed": 32, "failed": [],
                  "orders": [{"chain": CHAIN, "score": 95.0, "se": 0.2, "seeds": 2}, {"chain": OTHER, "score": 94.0, "se": 0.2, "seeds": 2}]}
    sentence = evidence_sentence(record | {"outcomes": ties, "exhaustive": None, "search": old_search})
    assert "supports" not in sentence
    assert sentence.startswith("Every one of the 5 pairs is a tie") and "rests on leanings within noise" in sentence


def test_the_pair_sentence_counts_neither_a_forced_pair_nor_a_weak_one_as_evidence(record):
    """Stop 43: "3 of 5 pair decisions are outside their confidence intervals" counted a pair where only one order
    applies (no interval at all) and two one-seed decisions, then called "the rest" weak."""
    forced = outcome("quantize", "int8", 0.0, winner="quantize") | {"only_order": "int8 → quantize: already int8"}
    outcomes = [outcome("prune", "quantize", 2.0, winner="prune"), outcome("prune", "early_exit", -0.8, winner="early_exit", weak=True),
                outcome("prune", "int8", 0.1, tie=True), forced]
    sentence = evidence_sentence(record | {"outcomes": outcomes, "exhaustive": None, "search": None})
    assert sentence.startswith("Of the 3 pairs compared in both orders, 1 decided by their intervals on firm evidence, "
                               "1 on weak evidence (one seed, or the difference within a standard error of the margin), 1 a tie: "
                               "part of the order rests on leanings, not evidence; 1 pair is forced, as only one order applies.")


def test_the_pair_sentence_says_the_evidence_supports_the_order_only_when_every_compared_pair_is_firmly_decided(record):
    firm = [outcome("prune", "quantize", 2.0, winner="prune"), outcome("quantize", "early_exit", 3.0, winner="quantize"),
            outcome("quantize", "int8", 0.0, incompatible="quantize → int8: already quantised below 8 bits")]
    sentence = evidence_sentence(record | {"outcomes": firm, "exhaustive": None, "search": None})
    assert sentence.startswith("All 2 pairs compared in both orders are decided by their intervals (each excludes 0 and "
                               "clears the margin): the evidence supports the order.")


@pytest.mark.parametrize("fraction, text", [(0.41, "41%"), (0.004, "0.4%"), (0.9996, "over 99%"), (1.0, "100%")])
def test_a_probability_short_of_certain_is_never_rounded_to_100_percent(fraction, text):
    assert share_text(fraction) == text


def test_the_positions_a_forced_pair_rules_out_are_said_and_nothing_is_said_without_one(record):
    search = searched(record)["search"]
    plain = evidence_sentence(searched(record))
    ruled = evidence_sentence(searched(record) | {"search": search | {"positions_not_allowed": [["prune", 4], ["int8", 1], ["int8", 2]]}})
    assert "Forced pairs" not in plain
    assert ruled == plain + (" Forced pairs rule out prune at position 4; int8 at positions 1, 2; the search put every method "
                             "at every position they allow before any model-guided proposal.")


def test_the_orders_that_keep_every_edge_are_counted_and_a_chain_against_an_edge_is_said_so(record):
    """A reader took the CLI's 'Valid orders: 2' beside a search of 24 orders for a mistake: the count is of the orders
    that keep every precedence edge, and a search may recommend one that goes against an edge; the words say both."""
    from ordercomp.report.verdict import graph_orders_sentence

    assert graph_orders_sentence(record) == ("1 order keeps every precedence edge of the pair decisions; the recommended "
                                             "chain keeps them all.")
    assert graph_orders_sentence(record | {"edges": [], "valid_chains": [CHAIN] * 24}) == (
        "No pair decision set a precedence edge, so every order keeps the graph.")
    against = record | {"chain": OTHER}
    assert graph_orders_sentence(against) == (
        "1 order keeps every precedence edge of the pair decisions; the recommended chain goes against prune → quantize: "
        "the search measured it best of the whole orders it ran, whatever the pairs said.")
    assert graph_orders_sentence(record | {"valid_chains": [CHAIN] * 50}).startswith("50 or more orders keep")
    assert html.escape(graph_orders_sentence(against)) in meeting_report(against)


def test_the_cli_prints_the_headline_of_the_shipped_file_or_says_nothing_was_measured(shipped_record, record, capsys):
    from ordercomp.exploration.results import print_headline

    print_headline(shipped_record)
    printed = capsys.readouterr().out
    assert "Shipped file size: 15.0 KiB — ONNX file, 80.0× smaller" in printed and "Speed, batch 32: 10.0× faster — 0.4 ms" in printed
    print_headline(record | {"chain_steps": []})
    assert capsys.readouterr().out == "\nWhat the recommended chain buys: nothing was measured (no step of the chain gave a model).\n"


def test_the_clis_export_lines_word_sizes_speed_and_latency_as_the_export_page_does():
    """`ordercomp apply` on the default run's chain printed the float ONNX file as "batch 1 0.06 ms ... 0.92x faster at
    batch 1" where the Export page and the headline read "0.0592 ms, 1.08× slower" for the same kind of file."""
    from ordercomp.dashboard.views import export_rows
    from ordercomp.deploy.export import export_summary

    entry = {"format": "onnx", "file": "model.onnx", "size_bytes": 127723,
             "measured": {"runtime": "onnxruntime (CPU)", "accuracy": 99.16434540389972, "latency_ms": {"1": 0.059227, "32": 1.0745}},
             "base_measured": {"format": "onnx", "runtime": "onnxruntime (CPU)", "size_bytes": 1194124, "accuracy": 99.16434540389972,
                               "latency_ms": {"1": 0.054989, "32": 1.32625}},
             "speedup": {"1": 0.054989 / 0.059227, "32": 1.32625 / 1.0745}}
    [line] = export_summary({"formats": [entry], "reported_storage_bytes": 14908.5})
    [row] = export_rows({"formats": [entry]})
    assert "124.7 KiB" in line and row["file size"] == "124.7 KiB" and "the reported 14.6 KiB" in line
    assert "accuracy 99.16 %" in line and "base 99.16 %" in line and row["accuracy"] == "99.16 %"
    assert "batch 1 0.0592 ms" in line and row["batch 1"] == "0.0592 ms, 1.08× slower"
    assert "1.08× slower at batch 1" in line and "1.23× faster at batch 32" in line and "x faster" not in line


def test_the_report_says_how_many_whole_orders_a_search_compared_not_every_order(record):
    """The default run's report began "Every order of applying 4 compression methods ... was compared pairwise", where
    the surrogate search had measured 18 of the 24 whole orders, and a pairwise search measures none."""
    run = searched(record)
    run["search"]["screened_orders"] = [{"chain": list(c), "score": 90.0, "se": 0.0, "seeds": 1}
                                        for c in (CHAIN, OTHER, THIRD, ["int8", "prune", "quantize", "early_exit"])]
    screen = first_screen(meeting_report(run))
    assert "every pair in both orders, then 4 of the 24 whole orders: " in screen and "Every order" not in screen
    pairwise = run | {"search": {"strategy": "pairwise"}}
    assert "were compared, every pair in both orders: " in first_screen(meeting_report(pairwise))


BUSY = {"start": 7.6, "end": 7.8, "logical_cores": 2}  # an audit's machine: other jobs on its 2 cores
IDLE = {"start": 0.4, "end": 1.9, "logical_cores": 2}
CAVEAT = ("Timed while the machine was busy (load average 7.8 on 2 logical cores): absolute times may read several times "
          "slower than on an idle machine; the speed-ups against the base were timed side by side, under the same load.")


def test_a_timing_on_a_busy_machine_is_said_in_one_sentence_and_only_then():
    """An audit read the packed file at 7.29 ms at batch 1 against 0.45 ms idle and TorchScript at 0.69 against 0.48,
    timed while other jobs held the machine at a load of 7-8 on 2 cores, and no page said so."""
    from ordercomp.report.figures import busy_caveat

    assert busy_caveat([BUSY]) == CAVEAT
    assert busy_caveat([IDLE, BUSY | {"start": 3.1, "end": 2.2}, BUSY]) == CAVEAT  # the busiest timing
    assert busy_caveat([BUSY], side_by_side=False) == ("Timed while the machine was busy (load average 7.8 on 2 logical "
                                                       "cores): absolute times may read several times slower than on an idle machine.")
    assert busy_caveat([IDLE]) == busy_caveat([IDLE | {"start": 2.04, "end": 1.0}]) == ""  # 2.0 on 2 cores is not above them
    assert busy_caveat([None]) == busy_caveat([]) == ""  # a record from before loads were kept
    assert busy_caveat([{"start": None, "end": None, "logical_cores": 2}]) == ""  # a platform without a load average


def test_the_headline_says_its_file_was_timed_on_a_busy_machine_in_the_report_and_the_cli(shipped_record, capsys):
    from ordercomp.exploration.results import print_headline

    busy = shipped_record | {"shipped": SHIPPED | {"load": BUSY}}
    assert CAVEAT in first_screen(meeting_report(busy))
    print_headline(busy)
    assert f"  {CAVEAT}\n" in capsys.readouterr().out
    for quiet in (shipped_record, shipped_record | {"shipped": SHIPPED | {"load": IDLE}}):  # from before loads were kept; idle
        assert "machine was busy" not in meeting_report(quiet)
        print_headline(quiet)
        assert "machine was busy" not in capsys.readouterr().out


def report_section(report: str, title: str) -> str:
    return report.split(f"<h2>{title}</h2>", 1)[1].split("<h2>", 1)[0]


def test_step_latencies_timed_on_a_busy_machine_say_so_where_the_report_shows_them(record):
    """The latency objectives time every step, and the chain's steps are timed too; their milliseconds stood in the
    trade-offs, the pair matrix and the chain table with no word of the load they were timed under."""
    from ordercomp.report.figures import busy_caveat

    said = html.escape(busy_caveat([BUSY], side_by_side=False))  # each step timed alone, not beside the base
    loaded = lambda steps, load: [step | {"load": load} for step in steps]
    steps_busy = meeting_report(record | {"steps": loaded(record["steps"], BUSY), "chain_steps": loaded(record["chain_steps"], IDLE)})
    chain_busy = meeting_report(record | {"chain_steps": loaded(record["chain_steps"], BUSY)})
    shows = {"Pair matrix": (True, False), "Trade-offs": (True, True), "The chain applied to the base (test split)": (False, True)}
    for title, (by_steps, by_chain) in shows.items():
        assert (said in report_section(steps_busy, title), said in report_section(chain_busy, title)) == (by_steps, by_chain), title
    for report in (steps_busy, chain_busy):
        assert report.count("machine was busy") == 2  # one sentence a section, never beside the headline (its file was not timed busy)
    assert "machine was busy" not in meeting_report(record | {"steps": loaded(record["steps"], IDLE)})  # idle, or none recorded


def test_step_latencies_timed_on_a_busy_machine_say_so_in_the_cli_summary(shipped_record, capsys):
    """The CLI's summary printed the pair outcomes and the chain table of timed steps with no word of the load, where the
    pages and the report say it below the same tables."""
    from types import SimpleNamespace

    from ordercomp.exploration.results import print_summary
    from ordercomp.report.figures import busy_caveat

    record = shipped_record | {"base": {"source": "sample", "reference": "digits_cnn"}, "exhaustive": None}  # a run without --exhaustive
    said = busy_caveat([BUSY], side_by_side=False)
    loaded = lambda steps, load: [step | {"load": load} for step in steps]
    for steps_load, chain_load, tables in ((BUSY, IDLE, ["Pair outcomes"]), (IDLE, BUSY, ["Chain applied to the base model"]),
                                           (IDLE, IDLE, [])):
        busy = record | {"steps": loaded(record["steps"], steps_load), "chain_steps": loaded(record["chain_steps"], chain_load)}
        print_summary(SimpleNamespace(to_dict=lambda: busy))
        out = capsys.readouterr().out
        assert out.count(said) == len(tables)
        for title in tables:  # below its own table, before the next heading
            assert said in out.split(title, 1)[1].split("\n\n", 1)[0]


def test_the_clis_export_lines_end_with_the_busy_machine_sentence_when_the_files_were_timed_busy():
    from ordercomp.deploy.export import export_summary

    entry = {"format": "packed", "file": "model.packed.safetensors", "size_bytes": 20_000,
             "measured": {"runtime": "ordercomp packed loader (PyTorch eager)", "accuracy": 97.5, "latency_ms": {"1": 7.29}, "load": BUSY},
             "base_measured": {"format": "packed", "runtime": "ordercomp packed loader (PyTorch eager)", "size_bytes": 80_000,
                               "accuracy": 98.0, "latency_ms": {"1": 9.1}, "load": BUSY},
             "speedup": {"1": 9.1 / 7.29}}
    unmeasured = {"format": "state_dict", "file": "model.state_dict.pt", "size_bytes": 80_000}
    assert export_summary({"formats": [entry, unmeasured]})[-1] == CAVEAT
    assert len(export_summary({"formats": [entry | {"measured": entry["measured"] | {"load": IDLE}}, unmeasured]})) == 2
    old = {key: value for key, value in entry["measured"].items() if key != "load"}
    assert len(export_summary({"formats": [entry | {"measured": old}]})) == 1


def markup_record() -> dict:
    """The hand-made record as a record ordercomp did not write might hold it: a method, a setting and a path holding markup."""
    record = json.loads(json.dumps(synthetic_record()).replace('"int8"', json.dumps(MARKUP)))
    record["configs"]["prune"]["importance"] = "<b>l2</b>"
    record["spec"]["model"] = record["base"]["architecture"] = "<i>net</i>.pt"
    return record


@pytest.mark.parametrize("draw", [charts.tradeoff_figure, lambda record: charts.tradeoff_figure(record, "size_bytes"),
                                  charts.chain_steps_figure, charts.pair_matrix_figure, charts.precedence_figure])
def test_record_text_in_a_chart_reads_as_written_never_as_a_link_or_markup(draw):
    """A record holding <a href="..."> in a method name drew it as a live link in the pair matrix's tick labels, the
    precedence graph's node labels, the trade-offs' hover text and the chain chart's title; <b> in a setting as bold."""
    drawn = figure_texts(draw(markup_record()).to_plotly_json())
    assert not [text for text in drawn if MARKUP in text or "<b>l2</b>" in text]
    assert any(html.escape(MARKUP, quote=False) in text for text in drawn)  # shown, escaped: plotly draws &lt; as <


def test_a_meeting_report_of_a_record_holding_markup_shows_it_as_text():
    report = meeting_report(markup_record())
    # the charts' JSON as plotly reads it: plotly.io writes <, > and / as \\u escapes inside its script tags
    read = re.sub(r"\\u00(3c|3e|2f)", lambda m: bytes.fromhex(m.group(1)).decode(), report).replace('\\"', '"')
    assert MARKUP not in read and "<b>l2</b>" not in read and "<i>net</i>" not in read
    assert html.escape(MARKUP, quote=False) in read and "&lt;b&gt;l2&lt;/b&gt;" in read



@pytest.mark.parametrize("batch", ["1.5", "x"])
def test_a_shipped_latency_whose_batch_size_is_no_whole_number_is_one_line_naming_it(shipped_record, batch):
    """A record with a shipped latency at batch "1.5" raised "invalid literal for int() with base 10: '1.5'" from deep
    in the headline, which names neither the record nor what to fix."""
    shipped = SHIPPED | {"latency_ms": {batch: 0.05, "32": 0.4}}
    with pytest.raises(ValueError, match=rf"^the record's shipped latency_ms has a batch size that is not a whole number "
                                         rf"\('{re.escape(batch)}'\): .+") as error:
        meeting_report(shipped_record | {"shipped": shipped})
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("cut", ["latency_ms", "base", "base latency at 32"])
def test_a_shipped_entry_missing_a_figure_is_one_line_naming_it(shipped_record, cut):
    """A shipped entry without its latencies, its base, or the base's latency at a batch the file has raised a bare
    KeyError from the headline."""
    shipped = {key: value for key, value in SHIPPED.items() if key != cut}
    if cut == "base latency at 32":
        shipped["base"] = SHIPPED["base"] | {"latency_ms": {"1": SHIPPED["base"]["latency_ms"]["1"]}}
    missing = "32" if cut == "base latency at 32" else cut
    with pytest.raises(ValueError, match=rf"^the record's shipped entry has no '{missing}' where ordercomp writes one .+: "
                                         "correct that entry or remove it$"):
        meeting_report(shipped_record | {"shipped": shipped})


def test_one_evaluated_order_is_said_to_be_the_only_one_and_not_given_a_probability(record):
    one = searched(record, separated=True)
    one["search"]["verdict"] |= {"evaluated": 1, "probability": 1.0}
    assert evidence_sentence(one).startswith("The recommended order is the only whole order evaluated. 76 method applications")


def test_one_seed_without_per_image_evidence_says_what_cannot_be_estimated(record):
    one_seed = searched(record, probability=None)
    one_seed["search"]["verdict"]["behind_at_most"] |= {"points": None}
    assert evidence_sentence(one_seed).startswith(
        "The recommended order scored best of the 3 evaluated; how likely it is the best cannot be estimated (one seed and "
        "no per-image evidence); it cannot be separated from quantize → prune → early_exit → int8; prune → early_exit → "
        "quantize → int8: quantize → prune → early_exit → int8 (0.20 points behind on the 4 seeds both were measured on) "
        "could be better by any amount: one seed draws no interval; more seeds would settle it. ")


def test_an_older_record_without_the_seeds_behind_or_the_applications_spent_still_reads(record):
    old = searched(record, behind=2.4)
    del old["search"]["verdict"]["behind_at_most"]["lower"], old["search"]["applications"]
    sentence = evidence_sentence(old)
    assert "quantize → prune → early_exit → int8 could be up to 2.40 points better" in sentence
    assert sentence.endswith("32 method applications per seed were spent.")
    no_seeds = searched(record, behind=2.4)
    no_seeds["search"]["verdict"]["behind_at_most"]["seeds"] = 0
    assert "quantize → prune → early_exit → int8 could be up to 2.40 points better" in evidence_sentence(no_seeds)


def test_a_screened_search_says_what_confirming_at_the_full_budget_cost(record):
    screened = searched(record)
    screened["search"] |= {"screen": 0.25, "screened_orders": screened["search"]["orders"] * 2}  # 3 seeds: no one-seed search
    screened["search"]["applications"] |= {"confirm": 8, "cost": 27.4, "search_seeds": 3}
    assert ("(32 per seed for the search, 12 on extra seeds for the contenders; the search ran at 25% of the fine-tuning "
            "epochs and 8 applications confirmed its best orders at the full budget, 27 full-budget applications in cost), "
            "59% of exhaustive (128)") in evidence_sentence(screened)


def test_without_a_pair_compared_in_both_orders_the_sentence_says_the_order_follows_what_applied(record):
    forced = outcome("quantize", "int8", 0.0, winner="quantize") | {"only_order": "int8 → quantize: already int8"}
    outcomes = [outcome("prune", "int8", 0.0, incompatible="int8 → prune: int8 weights cannot train"), forced]
    assert evidence_sentence(record | {"outcomes": outcomes, "exhaustive": None, "search": None}).startswith(
        "No two methods could be compared in both orders; the order follows what could be applied; 1 pair is forced, as "
        "only one order applies.")


def test_the_exhaustive_check_says_the_rank_and_whether_the_regret_is_within_the_best_orders_standard_error(record):
    checked = searched(record, separated=True) | {"exhaustive": {"regret": 0.3, "best_se": 0.4, "of": 24, "rank": 2}}
    assert evidence_sentence(checked).endswith(" Checked against all 24 orders: the recommended order ranks 2, 0.30 below "
                                               "the best order, within that order's standard error (0.40).")
    checked["exhaustive"]["regret"] = 0.5
    assert evidence_sentence(checked).endswith("0.50 below the best order, more than that order's standard error (0.40).")


def test_more_than_three_inseparable_orders_are_named_three_and_counted(record):
    four = searched(record, inseparable=(OTHER, THIRD, ["int8"], ["prune"]))
    assert ("it cannot be separated from quantize → prune → early_exit → int8; prune → early_exit → quantize → int8; int8 "
            "and 1 more: by a 95%") in evidence_sentence(four)


def test_an_order_exactly_the_margin_better_at_most_is_within_it(record):
    edge = searched(record, behind=0.5)
    assert "none of them is more than 0.50 points better, within the 0.5 points that count" in evidence_sentence(edge)
    assert settle_suggestion(edge["search"]) is None


def test_a_record_with_the_bound_but_without_the_margin_says_only_that_the_orders_are_within_noise(record):
    old = searched(record, behind=2.4)
    del old["search"]["verdict"]["margin"]
    assert "int8: the top orders are within noise of each other. 76 method" in evidence_sentence(old)
    assert settle_suggestion(old["search"]) is None


def test_a_choice_nothing_bounds_is_open_and_gets_a_settle_suggestion(record):
    one_seed = searched(record)
    one_seed["search"]["verdict"]["behind_at_most"] |= {"points": None}
    assert settle_suggestion(one_seed["search"]) == 8 * 11


def test_a_search_on_the_only_seed_is_said_as_a_search_not_as_a_one_seed_search_confirmed_elsewhere(record):
    only = searched(record)
    only["search"]["applications"] |= {"search_seeds": 1}
    assert "76 method applications were spent (32 per seed for the search, 12 on extra seeds" in evidence_sentence(only)


@pytest.mark.parametrize("second, rest", [
    (outcome("quantize", "early_exit", 3.0, winner="quantize", weak=True),
     "1 decided by their intervals on firm evidence, 1 on weak evidence (one seed, or the difference within a standard error of the margin)"),
    (outcome("quantize", "early_exit", 0.1, tie=True), "1 decided by their intervals, 1 a tie")])
def test_the_pair_sentence_does_not_say_the_evidence_supports_the_order_when_a_decision_is_weak_or_a_pair_ties(record, second, rest):
    outcomes = [outcome("prune", "quantize", 2.0, winner="prune"), second]
    assert evidence_sentence(record | {"outcomes": outcomes, "exhaustive": None, "search": None}).startswith(
        f"Of the 2 pairs compared in both orders, {rest}: part of the order rests on leanings, not evidence.")


def test_exactly_three_inseparable_orders_are_all_named_with_no_more_counted(record):
    three = searched(record, inseparable=(OTHER, THIRD, ["int8"]))
    assert "prune → early_exit → quantize → int8; int8: by a 95%" in evidence_sentence(three)


def test_an_order_nothing_bounds_below_is_said_to_be_possibly_worse_by_any_amount(record):
    settled = searched(record)
    settled["search"]["verdict"]["gaps"] = [{"chain": THIRD, "lower": 5.7, "better_at_most": 0.0, "worse_at_most": None, "seeds": 1}]
    assert ("the recommended order is a sound choice, but not every one of them: prune → early_exit → quantize → int8 (5.70 "
            "points behind on the 1 seed both were measured on) could be worse by any amount.") in evidence_sentence(settled)


def test_when_every_decided_pair_is_weak_none_is_said_to_be_decided_on_firm_evidence(record):
    outcomes = [outcome("prune", "quantize", 2.0, winner="prune", weak=True), outcome("quantize", "early_exit", 0.1, tie=True)]
    assert evidence_sentence(record | {"outcomes": outcomes, "exhaustive": None, "search": None}).startswith(
        "Of the 2 pairs compared in both orders, none decided by their intervals on firm evidence, 1 on weak evidence")


def test_an_edge_of_a_method_left_out_of_the_chain_is_not_one_the_chain_goes_against(record):
    from ordercomp.report.verdict import graph_orders_sentence

    left_out = record | {"edges": record["edges"] + [{"before": "lowrank", "after": "prune"}, {"before": "prune", "after": "lowrank"}]}
    assert graph_orders_sentence(left_out).endswith("the recommended chain keeps them all.")

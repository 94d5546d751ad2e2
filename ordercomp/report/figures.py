"""Every figure the dashboard and the meeting report state about an exploration, as text, from one place:
the headline (what the shipped file buys, in its runtime; the eager simulation labelled as such), the
number of method applications, the units and rounding of sizes, latencies, accuracies, probabilities and durations,
the sentence that says a file or a step was timed on a busy machine (`busy_caveat`) and the one that says the
step cache stopped being written (`cache_stopped_caveat`).
A figure read on any page, in the report or in the CSV comes from here, so they read the same.
"""
from __future__ import annotations

from dataclasses import dataclass

RUNTIME_NAMES = {"onnx": "onnxruntime", "onnx_int8": "onnxruntime", "torchscript": "TorchScript", "pt2": "torch.export",
                 "packed": "PyTorch (packed weights)"}
FORMAT_NAMES = {"onnx": "ONNX", "onnx_int8": "int8 ONNX", "torchscript": "TorchScript", "pt2": ".pt2", "packed": "packed file",
                "state_dict": "state dict", "manifest": "manifest"}
SIMULATION = "PyTorch eager simulation"  # fake-quantised layers, masks and exit heads run as PyTorch modules
COUNTED_SIZE = "the storage the metrics count (quantised layers at their bit width, sparse layers as bitmap + non-zeros)"
# What the step-by-step figures are, wherever they stand beside the headline (Trade-offs page, meeting report): the
# shipped file of the same chain is larger than its counted storage (the default chain: 124.7 KiB against 14.6 KiB)
# and runs at another speed, so neither may pass for the file's.
STEP_FIGURES = (f"Sizes and latencies in these charts and tables are not a file's: sizes are {COUNTED_SIZE}, latencies "
                f"the {SIMULATION} (fake-quantised layers run as PyTorch modules), which a deployable file need not match.")


def plural(count: int, noun: str) -> str:
    """'1 channel', '3 channels', '10 classes'."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}es" if noun.endswith(("s", "x", "ch", "sh")) else f"{count} {noun}s"


def epochs_text(epochs: float) -> str:
    """'1 epoch', '0.5 epochs', '3 epochs'."""
    return f"{epochs:g} epoch" if epochs == 1 else f"{epochs:g} epochs"


def size_text(size_bytes: float | None) -> str:
    """Bytes in binary units, one decimal: '14.6 KiB'."""
    if size_bytes is None:
        return "n/a"
    for prefix, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:.1f} {prefix}"
    return f"{size_bytes:.0f} B"


def duration(seconds: float) -> str:
    """'45 s', '39 min', '2.1 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def latency_text(ms: float | None) -> str:
    """Milliseconds to three significant digits: '0.569 ms', '12.2 ms'."""
    return "not measured" if ms is None else f"{ms:.3g} ms"


def share_text(fraction: float) -> str:
    """A probability or share as a percentage: whole percent, one decimal below 1 %; short of certain is never
    rounded up to 100 % (a Monte-Carlo estimate of 0.999 is not a certainty)."""
    if 0.995 <= fraction < 1:
        return "over 99%"
    return f"{100 * fraction:.0f}%" if fraction >= 0.01 else f"{100 * fraction:.1f}%"


def accuracy_text(percent: float | None) -> str:
    return "n/a" if percent is None else f"{percent:.2f} %"


def points_text(change: float | None) -> str:
    return "n/a" if change is None else f"{change:+.2f} points"


def times_text(ratio: float | None) -> str:
    """'80.4×'; ratios below 10 get two significant decimals: '1.76×'."""
    if ratio is None:
        return "n/a"
    return f"{ratio:.1f}×" if ratio >= 10 else f"{ratio:.2f}×"


def speed_text(speedup: float | None) -> str:
    """'1.50× faster' or '1.76× slower' from the base's latency over the model's."""
    if speedup is None:
        return "n/a"
    return f"{times_text(speedup)} faster" if speedup >= 1 else f"{times_text(1 / speedup)} slower"


def smaller_text(reduction: float | None) -> str:
    """'80.0× smaller' or '1.05× larger' from the base's size over the model's."""
    if reduction is None:
        return "n/a"
    return f"{times_text(reduction)} smaller" if reduction >= 1 else f"{times_text(1 / reduction)} larger"


def applications(record: dict) -> int:
    """Method applications an exploration made: every step on the validation split (cached ones included) and
    the chain applied once on the test split; the count its progress reached."""
    return len(record["steps"]) + len(record["chain_steps"])


def cache_hits_text(record: dict) -> str:
    """' (48 found in the step cache)' after the count of applications, where some came from the cache (a resumed or
    repeated run: its wall time is then that of the steps computed this time); '' where none did."""
    hits = record["applications"].get("cache_hits", 0)
    return f" ({hits} found in the step cache)" if hits else ""


@dataclass(frozen=True)
class Headline:
    """One headline figure: a short label, its value, and a line saying what it is and where it was measured."""

    label: str
    value: str
    detail: str


def headline(figures: dict) -> list[Headline]:
    """The headline of `meeting.headline_figures(record)`: the shipped file's size, speed in its runtime and accuracy
    when the record has them, else the eager simulation's, labelled as such; and the BitOps the metrics count."""
    shipped = figures.get("shipped")
    items = _shipped_headline(shipped) if shipped else _simulated_headline(figures)
    return items + [Headline("BitOps", f"{times_text(figures['bitops_reduction'])} fewer",
                             "bit operations per image counted by ordercomp (MACs × weight bits × activation bits), against the base")]


def _shipped_headline(shipped: dict) -> list[Headline]:
    base, fmt = shipped["base"], FORMAT_NAMES.get(shipped["format"], shipped["format"])
    runtime = shipped.get("runtime") or RUNTIME_NAMES.get(shipped["format"], shipped["format"])
    where = f"{fmt} file in {runtime}, after warm-up, {(shipped.get('cpu') or {}).get('model') or 'this CPU'}"
    latency, base_latency = shipped["latency_ms"], base["latency_ms"]
    items = [Headline("Shipped file size", size_text(shipped["file_bytes"]),
                      f"{fmt} file, {smaller_text(shipped.get('size_ratio'))} than the base's {size_text(base['file_bytes'])}")]
    for batch in sorted(latency, key=int):
        items.append(Headline(f"Speed, batch {batch}", speed_text((shipped.get("speedup") or {}).get(batch)),
                              f"{latency_text(latency[batch])} against the base's {latency_text(base_latency.get(batch))}; {where}"))
    items.append(Headline("Accuracy (test)", accuracy_text(shipped["accuracy"]),
                          f"{points_text(shipped['accuracy'] - base['accuracy'])} against the base's {accuracy_text(base['accuracy'])} "
                          f"(the {fmt} file on the test split)"))
    return items


def headline_caveat(figures: dict) -> str:
    """`busy_caveat` of the shipped file's timing (empty without one): said below the headline, wherever it stands."""
    return busy_caveat([figures.get("shipped_load")]) if figures.get("shipped") else ""


def steps_caveat(steps: list[dict]) -> str:
    """`busy_caveat` of the steps' own timings (each step's `load`; empty when none was timed busy or none recorded one),
    said where their latencies are shown: the latency trade-off, the chain table, the pair outcomes and orders of the
    latency objectives. A step is timed alone, not side by side with the base."""
    return busy_caveat([step.get("load") for step in steps], side_by_side=False)


def cache_stopped_caveat(record: dict) -> str:
    """One sentence when the step cache stopped being written during the run (a full disk or quota, a folder made
    read-only; `StepCache.stopped`), empty otherwise: the results stand, but a resumed or repeated run computes
    the uncached steps again. Said after the CLI's summary and on the Runs and Order pages."""
    stopped = record.get("applications", {}).get("cache_stopped")
    if not stopped:
        return ""
    return (f"The step cache stopped being written during the run ({stopped}): these results are complete, but a rerun "
            "computes again the steps that were not cached; free space in the cache folder")


def busy_caveat(loads: list[dict | None], *, side_by_side: bool = True) -> str:
    """One sentence when a timing ran with the load average above the logical cores (`runtimes.machine_load`), for the
    busiest of `loads`; empty when none did or none was recorded (a record from before loads were kept, a platform
    without a load average). Processes then wait for a core, and a call with 2 threads for a descheduled one: a packed
    file read 7.29 ms at batch 1 at a load of 7-8 on 2 cores against 0.45 ms idle. With `side_by_side` (a file timed in
    alternating rounds with its base), the speed-ups saw the same load, and the sentence says so."""
    busy = [peak for load in loads if (peak := _above_the_cores(load))]
    if not busy:
        return ""
    load, cores = max(busy)
    paired = "; the speed-ups against the base were timed side by side, under the same load" if side_by_side else ""
    return (f"Timed while the machine was busy (load average {load:.1f} on {plural(cores, 'logical core')}): absolute times "
            f"may read several times slower than on an idle machine{paired}.")


def _above_the_cores(load: dict | None) -> tuple[float, int] | None:
    """(the highest load average read during a timing, the logical cores) when it was above them, else None."""
    load = load or {}
    readings, cores = [v for v in (load.get("start"), load.get("end")) if v is not None], load.get("logical_cores")
    if not readings or not cores or round(max(readings), 1) <= cores:
        return None
    return max(readings), cores


def _simulated_headline(figures: dict) -> list[Headline]:
    base_ms, final_ms = figures["latency_ms"]
    return [Headline("Size (counted)", smaller_text(figures['size_reduction']),
                     f"{COUNTED_SIZE}, against the base; no deployable file measured"),
            Headline("Speed, batch 1", speed_text(_ratio(base_ms, final_ms)),
                     f"{latency_text(final_ms)} against the base's {latency_text(base_ms)} in the {SIMULATION}, "
                     "not a deployable file"),
            Headline("Accuracy (test)", points_text(figures["accuracy_change"]), f"against the base, in the {SIMULATION}")]


def _ratio(before: float | None, after: float | None) -> float | None:
    return before / after if before and after else None

"""What the pages show of jobs and models: titles and table rows of jobs, progress per pair, the
result of an exploration or export, a model's headline figures."""
from __future__ import annotations

import time
from pathlib import Path

from ..jobs import ACTIVE, BaselineSpec, JobStore
from ..order.plan import chain_text
from ..report.figures import accuracy_text, latency_text, size_text, speed_text
from .formatting import FORMAT_LABELS, si


def is_active(job: dict | None) -> bool:
    return job is not None and job["status"] in ACTIVE


def job_title(job: dict, *, status: bool = True) -> str:
    """'id · methods · model on data · status'; without `status` where the title is not redrawn as the job moves on
    (the Runs page's run picker, drawn once per page run beside the live table of runs)."""
    spec = job["spec"]
    what = {"explore": lambda: ", ".join(spec["methods"]) + (f" (settle {spec['settle']})" if spec.get("settle") else ""),
            "baseline": lambda: "baseline", "export": lambda: "export " + chain_text(spec["chain"])}[job.get("kind", "explore")]()
    title = f"{job['id']} · {what} · {Path(spec['model']).name} on {Path(spec['data']).name}"
    return f"{title} · {job['status']}" if status else title


def queue_line(place: int | None, limit: int, source: str) -> str:
    """Where a waiting job stands: '2nd in the queue: 1 worker runs at a time (half of the 2 CPU cores)'."""
    workers = f"{limit} worker{'s' if limit != 1 else ''} run{'' if limit != 1 else 's'} at a time ({source})"
    if place is None:
        return f"Waiting for a free worker: {workers}."
    return f"{ordinal(place)} in the queue: it starts when a worker is free; {workers}."


def ordinal(number: int) -> str:
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def progress_text(job: dict, unit: str = "method applications") -> str:
    """'24 of at most 100 method applications finished' while it runs: the total is known when the job starts (the plan
    and the search budget), so the count only moves forward; a finished search that needed fewer says so."""
    done, total = job["done"], job["total"]
    if job["status"] == "done" and done < total:
        return f"{done} {unit} finished: the search found its order within its budget of {total}"
    return f"{done} of {'at most ' if done < total and job.get('kind', 'explore') == 'explore' else ''}{total} {unit} finished"


def progress_fraction(job: dict) -> float:
    """How full the progress bar is: done of the total planned at the start, and full once the job is done (a search or
    a race that needed fewer applications than the most its budget allows ends below its total)."""
    return 1.0 if job["status"] == "done" else min(job["done"] / job["total"], 1.0)


def job_rows(jobs: list[dict], positions: dict[str, int] | None = None) -> list[dict]:
    """One row per job for a table; `positions` (job id -> place in the queue) fill the queue column."""
    positions = positions or {}
    return [{"id": job["id"], "status": job["status"],
             "queue": ordinal(positions[job["id"]]) if job["id"] in positions else "",
             "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(job["created"])),
             "model": Path(job["spec"]["model"]).name, "data": Path(job["spec"]["data"]).name,
             "methods": ", ".join(job["spec"].get("methods") or job["spec"].get("chain", ())),
             "seeds": job["spec"].get("seeds"), "applications": f"{job['done']} of {job['total']}" if job["total"] else "",
             "error": job["error"] or ""} for job in jobs]


def pair_progress(spec: dict, steps: list[dict], *, finished: bool = False) -> list[dict]:
    """Finished applications per single method, per pair (both orders), of the whole orders the search evaluates, in an
    exhaustive run of the longer orders, and of the confirmation and the race's extra seeds for the orders in
    contention; with the first failure's reason. A group is waiting before its first step, running until its last, ok
    after it (a search that found its order within its budget, or a race that separated its leader early, ends ok
    below it)."""
    from .. import order
    from ..exploration.explorer import ExploreSpec

    methods, seeds = spec["methods"], spec["seeds"]
    planned = ExploreSpec.from_dict(spec).planned_applications()
    by_chain: dict[tuple, list[dict]] = {}
    for step in steps:
        if step["seed"] < seeds:  # the race's extra seeds have a row of their own
            by_chain.setdefault(tuple(step["chain"]), []).append(step)
    groups = [(f"{m} alone", [(m,)]) for m in methods]
    groups += [(f"{a} / {b}", [(a, b), (b, a)]) for i, a in enumerate(methods) for b in methods[i + 1:]]
    if spec["exhaustive"]:
        groups.append(("orders of 3 or more", [c for c in order.exhaustive_plan(methods) if len(c) > 2]))
    rows = [_progress_row(label, [s for chain in chains for s in by_chain.get(chain, [])], len(chains) * seeds, finished)
            for label, chains in groups if chains]
    search_seeds = planned.get("search_seeds", seeds)
    searched = 0 if spec["exhaustive"] else (planned["per_seed"] - planned["pairwise_per_seed"]) * search_seeds
    longer = [s for chain, found in by_chain.items() if len(chain) > 2 for s in found]
    if searched:  # prefixes of 3 or more methods, beyond the pairwise plan
        rows.append(_progress_row("whole orders (search)", [s for s in longer if s["seed"] < search_seeds], searched, finished))
    if planned["beyond"]:
        confirmed = [s for s in longer if s["seed"] >= search_seeds]  # a one-seed search's best orders on the others
        label = "extra seeds for the contenders (race)" if search_seeds == seeds else \
            "the best orders on the other seeds (confirmation), extra seeds for the contenders (race)"
        rows.append(_progress_row(label, confirmed + [s for s in steps if s["seed"] >= seeds], planned["beyond"], finished))
    return rows


def _progress_row(label: str, done: list[dict], total: int, finished: bool) -> dict:
    broken = next((s for s in done if s["status"] != "ok"), None)
    if broken:
        status = broken["status"]
    elif len(done) >= total or (finished and done):
        status = "ok"
    else:
        status = "running" if done else ("not needed" if finished else "waiting")
    return {"applications": label, "done": len(done), "of": total, "progress": min(len(done) / total, 1.0), "status": status,
            "reason": broken["reason"] if broken else ""}


def exploration_record(store: JobStore, job_id: str | None) -> tuple[dict | None, str]:
    """The result of a finished exploration, or None and a line saying why there is none."""
    if not job_id:
        return None, "No exploration is open: launch one on the Runs page, or open one from its list of runs."
    job = store.get(job_id)
    if job is None:
        return None, f"There is no run {job_id} in the job store {store.path}: open one from the list on the Runs page."
    if job["kind"] != "explore":
        return None, f"Job {job_id} is a {job['kind']} job, not an exploration: open an exploration on the Runs page."
    if job["status"] != "done":
        return None, f"Run {job_id} is {job['status']}: its results appear here once it is done (see the Runs page)."
    return job["result"], ""


def find_baseline(store: JobStore, spec: BaselineSpec) -> dict | None:
    """The newest baseline job for exactly this base model, data and device (a record from before an option
    existed has that option's default)."""
    wanted = spec.to_dict()
    return next((job for job in store.list_jobs("baseline") if BaselineSpec.from_dict(job["spec"]).to_dict() == wanted), None)


def measured_baseline(store: JobStore, spec: BaselineSpec) -> dict | None:
    """The result of the newest finished baseline job for exactly this base (`find_baseline`), or None."""
    job = find_baseline(store, spec)
    return store.get(job["id"])["result"] if job is not None and job["status"] == "done" else None


def exploration_cost(store: JobStore, spec, choice: dict) -> dict:
    """`estimate.plan_cost` of the exploration `spec` from the base `choice`, from what the store measured of them: its
    finished steps, else the base's finished baseline job."""
    from .estimate import plan_cost
    from .plan import baseline_spec

    return plan_cost(spec, store.step_seconds(spec.model, spec.data), measured_baseline(store, baseline_spec(choice, spec.device)))


def latest_export(store: JobStore, exploration: str) -> dict | None:
    """The newest export job made from the exploration `exploration`."""
    return next((job for job in store.list_jobs("export") if job["spec"].get("exploration") == exploration), None)


def export_files(result: dict) -> list[tuple[str, Path]]:
    """(format, file) of every file an export job wrote, manifest last."""
    folder = Path(result["folder"])
    files = [(entry["format"], folder / entry["file"]) for entry in result["manifest"]["formats"] if "file" in entry]
    return files + [("manifest", folder / "manifest.json")]


def export_rows(manifest: dict) -> list[dict]:
    """One row per exported file: its size, where it ran, accuracy and latency there next to the base written and
    measured the same way, and its check against PyTorch, rounded to what the figures mean."""
    return [_export_row(entry) for entry in manifest["formats"]]


TIMED_BY_EXPLORATION = ", as the exploration timed this same file"


def _export_row(entry: dict) -> dict:
    measured, base = entry.get("measured") or {}, entry.get("base_measured") or {}
    latency, speedup = measured.get("latency_ms") or {}, entry.get("speedup") or {}
    return {"format": FORMAT_LABELS.get(entry["format"], entry["format"]),
            "file size": size_text(entry["size_bytes"]) if entry.get("size_bytes") else "",
            "runtime": measured.get("error") or measured.get("runtime", "") + (TIMED_BY_EXPLORATION if entry.get("measured_by") else ""),
            "accuracy": accuracy_text(measured.get("accuracy")) if "accuracy" in measured else "",
            "base accuracy": accuracy_text(base.get("accuracy")) if "accuracy" in base else "",
            **{f"batch {b}": f"{latency_text(t)}, {speed_text(speedup.get(b))}" if b in speedup else latency_text(t)
               for b, t in latency.items()},
            "check": check_text(entry)}


def check_text(entry: dict) -> str:
    """The verdict of a file's check against PyTorch, with the evidence it rests on (`export.check_text`)."""
    from ..deploy import export  # torch is imported only where a page shows an export

    if "error" in entry:
        return f"failed: {entry['error']}"
    return export.check_text(entry["check"]) if entry.get("check") else "not checked"


def card_metrics(card: dict) -> dict:
    """A sample model card's test metrics in the names `measure` uses (no latency: it depends on the machine)."""
    metrics = card["metrics"]
    return {"accuracy": metrics["test_accuracy"], "params": metrics["params"], "size_bytes": metrics["size_bytes"],
            "macs": metrics["macs"], "bitops": metrics["bitops"], "latency_ms_b1": None}


EAGER_LATENCY = ("The model as a PyTorch module, run eagerly on this machine (1 thread on a CPU): not a deployable "
                 "file. The shipped file's speed in its own runtime is on Trade-offs and Export.")


def metric_figures(metrics: dict) -> list[tuple[str, str, str | None]]:
    """(label, value, what it is when the label cannot say it all) for the headline figures of a model."""
    return [("Accuracy (test)", accuracy_text(metrics["accuracy"]), None), ("Parameters", si(metrics["params"]), None),
            ("Size", size_text(metrics["size_bytes"]), None), ("MACs", si(metrics["macs"]), None),
            ("BitOps", si(metrics["bitops"]), None),
            ("Latency, batch 1", latency_text(metrics.get("latency_ms_b1")), EAGER_LATENCY)]

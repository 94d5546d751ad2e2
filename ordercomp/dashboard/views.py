"""What the pages show of jobs and models: titles and table rows of jobs, progress per pair, the
result of an exploration or export, a model's headline figures."""
from __future__ import annotations

import time
from pathlib import Path

from ..jobs import ACTIVE, BaselineSpec, JobStore
from .formatting import human_bytes, si


def is_active(job: dict | None) -> bool:
    return job is not None and job["status"] in ACTIVE


def job_title(job: dict) -> str:
    spec = job["spec"]
    what = {"explore": lambda: ", ".join(spec["methods"]), "baseline": lambda: "baseline",
            "export": lambda: "export " + " -> ".join(spec["chain"])}[job.get("kind", "explore")]()
    return f"{job['id']} · {what} · {Path(spec['model']).name} on {Path(spec['data']).name} · {job['status']}"


def queue_line(place: int | None, limit: int, source: str) -> str:
    """Where a waiting job stands: '2nd in the queue: 1 worker runs at a time (half of the 2 CPU cores)'."""
    workers = f"{limit} worker{'s' if limit != 1 else ''} run{'' if limit != 1 else 's'} at a time ({source})"
    if place is None:
        return f"Waiting for a free worker: {workers}."
    return f"{ordinal(place)} in the queue: it starts when a worker is free; {workers}."


def ordinal(number: int) -> str:
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def job_rows(jobs: list[dict], positions: dict[str, int] | None = None) -> list[dict]:
    """One row per job for a table; `positions` (job id -> place in the queue) fill the queue column."""
    positions = positions or {}
    return [{"id": job["id"], "status": job["status"], "queue": positions.get(job["id"]), "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(job["created"])),
             "model": Path(job["spec"]["model"]).name, "data": Path(job["spec"]["data"]).name,
             "methods": ", ".join(job["spec"].get("methods") or job["spec"].get("chain", ())),
             "seeds": job["spec"].get("seeds"), "applications": f"{job['done']}/{job['total']}" if job["total"] else "",
             "error": job["error"] or ""} for job in jobs]


def pair_progress(spec: dict, steps: list[dict]) -> list[dict]:
    """Finished applications per single method, per pair (both orders) and, in an exhaustive run, of
    the longer orders; with the first failure's reason."""
    from .. import order

    methods, seeds = spec["methods"], spec["seeds"]
    by_chain: dict[tuple, list[dict]] = {}
    for step in steps:
        by_chain.setdefault(tuple(step["chain"]), []).append(step)
    groups = [(f"{m} alone", [(m,)]) for m in methods]
    groups += [(f"{a} / {b}", [(a, b), (b, a)]) for i, a in enumerate(methods) for b in methods[i + 1:]]
    if spec["exhaustive"]:
        groups.append(("orders of 3 or more", [c for c in order.exhaustive_plan(methods) if len(c) > 2]))
    rows = []
    for label, chains in groups:
        if not chains:
            continue
        done = [s for chain in chains for s in by_chain.get(chain, [])]
        broken = next((s for s in done if s["status"] != "ok"), None)
        total = len(chains) * seeds
        rows.append({"applications": label, "done": len(done), "of": total, "progress": len(done) / total,
                     "status": broken["status"] if broken else ("ok" if len(done) == total else "waiting"),
                     "reason": broken["reason"] if broken else ""})
    return rows


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


def latest_export(store: JobStore, exploration: str) -> dict | None:
    """The newest export job made from the exploration `exploration`."""
    return next((job for job in store.list_jobs("export") if job["spec"].get("exploration") == exploration), None)


def export_files(result: dict) -> list[tuple[str, Path]]:
    """(format, file) of every file an export job wrote, manifest last."""
    folder = Path(result["folder"])
    files = [(entry["format"], folder / entry["file"]) for entry in result["manifest"]["formats"] if "file" in entry]
    return files + [("manifest", folder / "manifest.json")]


def card_metrics(card: dict) -> dict:
    """A sample model card's test metrics in the names `measure` uses (no latency: it depends on the machine)."""
    metrics = card["metrics"]
    return {"accuracy": metrics["test_accuracy"], "params": metrics["params"], "size_bytes": metrics["size_bytes"],
            "macs": metrics["macs"], "bitops": metrics["bitops"], "latency_ms_b1": None}


def metric_figures(metrics: dict) -> list[tuple[str, str]]:
    """(label, value) for the headline figures of a model."""
    latency = metrics.get("latency_ms_b1")
    return [("Accuracy (test)", f"{metrics['accuracy']:.2f}%"), ("Parameters", si(metrics["params"])),
            ("Size", human_bytes(metrics["size_bytes"])), ("MACs", si(metrics["macs"])), ("BitOps", si(metrics["bitops"])),
            ("Latency (batch 1)", "not measured" if latency is None else f"{latency:.3f} ms")]

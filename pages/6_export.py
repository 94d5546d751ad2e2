"""Step 6, Export: the meeting report and results CSV, and the compressed model: apply the chain (or
an order of your own) to the base as a background job, then download its files or all as a zip."""
from functools import partial
from pathlib import Path

import streamlit as st

from ordercomp.dashboard import formatting, plan, session, views
from ordercomp.deploy.export import FORMATS, download_name, download_stem, export_caveat, export_verdict, export_zip
from ordercomp.jobs import start_job
from ordercomp.order import chain_text
from ordercomp.report.figures import FORMAT_NAMES
from ordercomp.report.meeting import meeting_report, results_csv
from pages._shared import KEEP, job_status, live_job, open_exploration, run_inside_app

run_inside_app()

store = session.open_store()
state = st.session_state
DOWNLOADS_PER_ROW = 4


def reports(job_id: str, record: dict) -> None:
    st.subheader("Report and results")
    left, right = st.columns(2)
    finished = store.get(job_id)["updated"]
    left.download_button("Meeting report (HTML)", data=partial(meeting_report, record, finished=finished),
                         help="One self-contained HTML file, readable offline by someone who has not seen the app",
                         file_name=f"ordercomp-report-{job_id}.html", mime="text/html", on_click="ignore", icon=":material/description:")
    right.download_button("Results CSV (every step)", data=partial(results_csv, record), file_name=f"ordercomp-steps-{job_id}.csv",
                          mime="text/csv", on_click="ignore", icon=":material/table:")


def new_export(job_id: str, record: dict) -> None:
    st.subheader("Compress and export")
    order_key = f"w_export_order_{job_id}"
    session.set_defaults(state, {order_key: list(record["chain"]), "w_export_formats": list(FORMATS)})
    order = st.multiselect("Order to apply: methods run in the order you pick them", record["spec"]["methods"], key=order_key,
                           **KEEP)
    if order:
        same = order == record["chain"]
        st.caption(f"{chain_text(order)}: {'the recommended chain' if same else 'your own order, not the recommended chain'}.")
    # pills, not a multiselect: a focused multiselect shrank as the next click blurred it, and "Apply and export"
    # moved from under that click (the first click after removing a format was lost)
    formats = st.pills("Formats", list(FORMATS), selection_mode="multi", key="w_export_formats",
                       format_func=formatting.FORMAT_LABELS.get, **KEEP)
    if st.button("Apply and export", type="primary", disabled=not order or not formats):
        try:
            start_job(store, plan.export_spec(record, order, formats, job_id), kind="export")
        except (ValueError, OSError) as error:
            st.error(f"Could not start the export: {formatting.md(error)}")
            return
        st.rerun()


def draw_export(job: dict) -> None:
    st.caption(f"Order {chain_text(job['spec']['chain'])} · formats {', '.join(job['spec']['formats']) or 'all'}")
    job_status(store, job, unit="chain steps")
    if job["status"] != "done":
        return
    result = job["result"]
    folder = Path(result["folder"])
    manifest = result["manifest"]
    verdict = export_verdict(manifest, result["verify"])  # computed from the rows below it
    (st.success if verdict["ok"] else st.warning)(formatting.md(verdict["text"]))
    # a static table wraps its cells to the page's width; a data grid of these eight columns scrolled sideways
    st.table([{column: formatting.md(value) for column, value in row.items()} for row in views.export_rows(manifest)],
             hide_index=True)
    st.caption(f"Each file measured in its own runtime on the whole test split after warm-up, {manifest.get('threads', '?')} threads, "
               "next to the base model written and measured the same way (latency, then the speed-up against the base); "
               f"the check compares the file's outputs with PyTorch's. {formatting.md(export_caveat(manifest))}".rstrip())
    if not folder.is_dir():
        st.error(f"The export folder {formatting.code(folder)} is gone: export again.")
        return
    downloads(job["spec"].get("exploration") or job["id"], job["spec"]["chain"], folder, views.export_files(result))


def downloads(run_id: str, chain, folder: Path, files: list[tuple[str, Path]]) -> None:
    """A button per file, four to a row so that every label fits, and one for all as a zip; the names carry the run,
    the chain and the format, so two runs' files never collide."""
    buttons = [(FORMAT_NAMES.get(name, name), formatting.FORMAT_LABELS.get(name, name), name, path) for name, path in files]
    for start in range(0, len(buttons), DOWNLOADS_PER_ROW):
        for column, (label, full, name, path) in zip(st.columns(DOWNLOADS_PER_ROW), buttons[start:start + DOWNLOADS_PER_ROW]):
            column.download_button(label, data=partial(path.read_bytes), file_name=download_name(run_id, chain, path.name), help=full,
                                   mime="application/octet-stream", on_click="ignore", key=f"file-{run_id}-{name}")
    folder_name = download_stem(run_id, chain)
    st.download_button("All as a zip", data=partial(export_zip, folder, folder_name), file_name=f"{folder_name}.zip",
                       mime="application/zip", on_click="ignore", type="primary", key=f"zip-{run_id}")


st.title("Export")
exploration_id, exploration = open_exploration(store)
reports(exploration_id, exploration)
new_export(exploration_id, exploration)
export_job = views.latest_export(store, exploration_id)
if export_job:
    live_job(store, export_job["id"], draw_export)

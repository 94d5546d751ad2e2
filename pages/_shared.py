"""Drawing pieces the pages share: a live job panel, a row of model figures, the open exploration,
and `run_inside_app`, which every page calls first.

Not a page itself (app.py lists the pages); logic and state helpers live in `ordercomp.dashboard` and `ordercomp.uploads`.
"""
from __future__ import annotations

import runpy
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from ordercomp.dashboard import formatting, session, views
from ordercomp.jobs import JobStore, StoreError, cancel_job, dispatch, queue_positions, resume_job, worker_limit
from ordercomp.report.figures import headline, headline_caveat
from ordercomp.report.meeting import headline_figures

APP = Path(__file__).resolve().parent.parent / "app.py"
KEEP = {"persist_state": "session"}  # a widget keeps its value on other pages (its key starts with w_)
STATUS_ICONS = {"queued": ":material/schedule:", "running": ":material/progress_activity:", "cancelling": ":material/pan_tool:",
                "cancelled": ":material/stop_circle:", "failed": ":material/error:", "done": ":material/check_circle:"}


def run_inside_app() -> None:
    """Make sure app.py (navigation, sidebar, the job from the URL) runs around this page.

    Until some session has called st.navigation, a fresh Streamlit server treats `pages/` as an
    old-style pages folder and runs a page file alone, without app.py: this happens when the
    first request after a restart is a deep link such as /runs?job=3f9a1c0b2d4e. Then leave that
    mode (as st.navigation itself does), run app.py, which runs this page inside it, and stop.
    """
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        runpy.run_path(str(APP), run_name="__main__")
        st.stop()


@contextmanager
def store_errors_in_one_line() -> Iterator[None]:
    """A job store that fails (not ordercomp's, damaged, read-only, locked too long) is one line on the page
    and the run stops there, instead of a traceback."""
    try:
        yield
    except StoreError as error:
        st.error(formatting.md(error))
        st.stop()


def live_job(store: JobStore, job_id: str, draw: Callable[[dict], None], every: float = session.POLL_SECONDS) -> None:
    """Draw a job with `draw(job)`; while the job is active the drawing polls the store every `every` seconds."""
    polling = views.is_active(store.get(job_id))

    def panel() -> None:
        with store_errors_in_one_line():  # a polling rerun runs this alone, outside app.py's guard
            move_queue(store)
            job = store.get(job_id)
            if job is None:
                st.error(f"There is no job {formatting.md(job_id)} in the job store {formatting.code(store.path)}.")
                return
            draw(job)
        if polling and not views.is_active(job):
            st.rerun()  # the whole page: it shows the result, and the polling stops

    st.fragment(panel, run_every=every if polling else None)()


def live_jobs(store: JobStore, jobs: list[dict], draw: Callable[[list[dict]], None], kind: str = "explore") -> None:
    """Draw a list of jobs with `draw(jobs)`; while one of them is active the drawing polls the store, as the open
    job's panel does, so the two never disagree."""
    polling = any(views.is_active(job) for job in jobs)

    def panel() -> None:
        with store_errors_in_one_line():
            current = store.list_jobs(kind)
            draw(current)
        if polling and not any(views.is_active(job) for job in current):
            st.rerun()  # the whole page: the polling stops

    st.fragment(panel, run_every=session.POLL_SECONDS if polling else None)()


def move_queue(store: JobStore) -> None:
    """End jobs whose worker is gone and start waiting ones in the freed slots (see `ordercomp.jobs.launch`)."""
    try:
        dispatch(store)
    except ValueError as error:  # an impossible worker limit
        st.error(f"Queued jobs cannot start: {formatting.md(error)}")


def job_summary(store: JobStore, job: dict, *, unit: str = "method applications") -> None:
    """Status line, place in the queue and overall progress."""
    st.markdown(f"{STATUS_ICONS[job['status']]} **{job['status']}** · job {formatting.code(job['id'])}")
    if job["status"] == "queued" and job["pid"] is None:
        place = queue_positions(store.list_jobs()).get(job["id"])
        try:
            st.caption(views.queue_line(place, *worker_limit(store)))
        except ValueError:  # an impossible limit: move_queue says so
            pass
    if job["total"]:
        st.progress(views.progress_fraction(job), text=views.progress_text(job, unit))


def job_status(store: JobStore, job: dict, *, unit: str = "method applications") -> None:
    """Status line, overall and current-step progress, the error, and cancel / resume buttons."""
    job_summary(store, job, unit=unit)
    if views.is_active(job) and job["label"]:
        st.progress(min(max(job["fraction"], 0.0), 1.0), text=f"now: {formatting.md(job['label'])}")
    if job["status"] == "failed":
        st.error(f"The job failed: {formatting.md(job['error'])}")
    if views.is_active(job) and job["status"] != "cancelling":
        if st.button("Cancel", key=f"cancel-{job['id']}", help="Stop after the current step; finished steps are kept"):
            _act(lambda: cancel_job(store, job["id"]))
    if job["status"] in ("failed", "cancelled"):
        if st.button("Resume", key=f"resume-{job['id']}", help="Run it again; finished steps come back from the cache"):
            _act(lambda: resume_job(store, job["id"]))


def _act(action: Callable[[], None]) -> None:
    try:
        action()
    except ValueError as error:  # the job moved on meanwhile (finished, or cancelled elsewhere)
        st.warning(formatting.md(error))
        return
    st.rerun()


def job_log(store: JobStore, job_id: str, lines: int = 200) -> None:
    with st.expander("Log", expanded=False):
        text = "\n".join(line["message"] for line in store.log(job_id, lines))
        st.code(text or "(nothing logged yet)", language=None)


def metric_row(metrics: dict) -> None:
    for column, (label, value, about) in zip(st.columns(6), views.metric_figures(metrics)):
        column.metric(label, value, help=about)


HEADLINE_PER_ROW = 3


def headline_row(record: dict) -> None:
    """What the recommended chain buys (`figures.headline`): the same figures, words and units as the meeting report."""
    figures = headline_figures(record)
    items = headline(figures)
    for start in range(0, len(items), HEADLINE_PER_ROW):  # at most three a row: a value such as "254.3× fewer" fits at 1400 px
        for column, item in zip(st.columns(HEADLINE_PER_ROW), items[start:start + HEADLINE_PER_ROW]):
            column.metric(item.label, item.value)
            column.caption(formatting.md(item.detail))
    if caveat := headline_caveat(figures):
        st.caption(formatting.md(caveat))


def open_exploration(store: JobStore) -> tuple[str, dict]:
    """The open exploration's id and record; otherwise a note on what to do, and the page stops."""
    job_id = st.session_state.get(session.JOB)
    record, why = views.exploration_record(store, job_id)
    if record is None:
        st.info(formatting.md(why))
        st.page_link("pages/3_runs.py", label="Go to Runs", icon=":material/play_circle:")
        st.stop()
    return job_id, record

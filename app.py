"""The ordercomp dashboard: find the best order to apply compression methods to a vision network (CNN or ViT), step by step.

    streamlit run app.py        # jobs go to .ordercomp/jobs.sqlite, or to $ORDERCOMP_STORE

Declares the pages (one per step of the user's path) and the shared sidebar: the open run with
its status, the device and the job store. Everything heavy runs in worker processes.
"""
from functools import partial

import streamlit as st

from ordercomp.dashboard import formatting, plan, session
from ordercomp.jobs import JobStore
from pages._shared import job_summary, live_job, store_errors_in_one_line

PAGES = [
    st.Page("pages/1_model_and_data.py", title="Model & data", icon=":material/database:", default=True),
    st.Page("pages/2_methods.py", title="Methods", icon=":material/tune:"),
    st.Page("pages/3_runs.py", title="Runs", icon=":material/play_circle:"),
    st.Page("pages/4_order.py", title="Order", icon=":material/account_tree:"),
    st.Page("pages/5_tradeoffs.py", title="Trade-offs", icon=":material/scatter_plot:"),
    st.Page("pages/6_export.py", title="Export", icon=":material/download:"),
]


def sidebar(store: JobStore) -> None:
    # the Model & data choice, not the open run's base (a run opened from its link can have another)
    st.caption(f"Base of a new exploration: {formatting.md(plan.describe_base(session.base_choice(st.session_state)))}")
    job_id = st.session_state.get(session.JOB)
    if job_id and store.get(job_id):
        st.markdown("**Open run**")
        live_job(store, job_id, partial(job_summary, store), every=session.SIDEBAR_POLL_SECONDS)
    else:
        st.caption("No run open yet.")
    st.caption(f"Device: {formatting.device_label()}")
    st.caption(f"Job store: {formatting.code(store.path)}")


st.set_page_config(page_title="Order of compression", page_icon=":material/compress:", layout="wide")
session.sync_job_param(st.session_state, st.query_params)
page = st.navigation(PAGES)
with store_errors_in_one_line():  # not ordercomp's, damaged, read-only, or failing later in any call
    job_store = session.open_store()
    with st.sidebar:
        sidebar(job_store)
    page.run()

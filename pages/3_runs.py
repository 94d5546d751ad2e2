"""Step 3, Runs: launch the exploration as a background job, follow it live, cancel or resume it,
and open any earlier run. The open run's id is in the URL (?job=...), so it survives reloads."""
import streamlit as st

from ordercomp.dashboard import estimate, formatting, plan, session, views
from ordercomp.report.figures import cache_stopped_caveat, epochs_text, plural
from ordercomp.jobs import queue_positions, set_worker_limit, start_job, worker_limit
from ordercomp.models.zoo import ARCHITECTURES
from ordercomp.order import chain_text
from pages._shared import job_log, job_status, live_job, live_jobs, run_inside_app

run_inside_app()

store = session.open_store()
state = st.session_state


def new_exploration() -> None:
    st.subheader("New exploration")
    plan.follow_base(state)
    try:
        spec = plan.plan_from_state(state)
    except ValueError as error:
        st.error(f"The plan from the Methods page cannot run: {formatting.md(error)}")
        st.page_link("pages/2_methods.py", label="Fix it on the Methods page", icon=":material/tune:")
        return
    cost = views.exploration_cost(store, spec, session.base_choice(state))
    settings = "; ".join(f"{name}: " + ", ".join(f"{key} {value}" for key, value in fields.items())
                         for name, fields in spec.settings.items()) or "the defaults"
    st.markdown(f"**{formatting.md(plan.describe_base(session.base_choice(state)))}** · methods **{', '.join(spec.methods)}** · "
                f"objective **{spec.objective}** · **{plural(spec.seeds, 'seed')}** · {epochs_text(spec.budget.epochs)} of fine-tuning per step"
                + (" · exhaustive validation" if spec.exhaustive else ""))
    st.caption(f"Settings: {formatting.md(settings)}. At most {cost['applications']} method applications, "
               f"{formatting.md(estimate.estimate_text(cost))}.")
    if spec.model in ARCHITECTURES:
        st.caption(f"{spec.model} is trained from scratch first unless it was already (Model & data shows its baseline).")
    if st.button("Launch exploration", type="primary"):
        try:
            job_id = start_job(store, spec)
        except (ValueError, OSError) as error:
            st.error(f"Could not start the exploration: {formatting.md(error)}")
            return
        session.open_job(state, st.query_params, job_id)
        st.rerun()
    st.page_link("pages/2_methods.py", label="Change the plan on the Methods page", icon=":material/tune:")


def draw_run(job: dict) -> None:
    spec = job["spec"]
    st.caption(f"{formatting.md(views.job_title(job))} · objective {spec['objective']} · {plural(spec['seeds'], 'seed')}")
    job_status(store, job)
    rows = views.pair_progress(spec, store.steps(job["id"]), finished=not views.is_active(job))
    st.dataframe(rows, hide_index=True, column_config={
        "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent")})
    for row in rows:
        if row["reason"]:
            st.warning(formatting.md(f"{row['applications']}: {row['status']}: {row['reason']}"))
    if job["status"] == "done":
        st.success(f"Recommended order: **{chain_text(job['result']['chain'])}**")
        if caveat := cache_stopped_caveat(job["result"]):
            st.warning(formatting.md(caveat))
        st.page_link("pages/4_order.py", label="See the order and its evidence", icon=":material/account_tree:")
    job_log(store, job["id"])


def all_runs() -> None:
    st.subheader("All runs")
    jobs = store.list_jobs("explore")
    if not jobs:
        st.caption("No runs yet.")
        return
    # redrawn with the open run's panel while any run is active, so its status and count agree with the panel
    live_jobs(store, jobs, lambda current: st.dataframe(views.job_rows(current, queue_positions(store.list_jobs())), hide_index=True))
    ids = [job["id"] for job in jobs]
    titles = {job["id"]: views.job_title(job, status=False) for job in jobs}  # the live table above says their status
    current = state.get(session.JOB)
    picked = st.selectbox("Open a run", ids, index=ids.index(current) if current in ids else None,
                          format_func=titles.get, placeholder="pick a run to open")
    if picked and picked != current:
        session.open_job(state, st.query_params, picked)
        st.rerun()


def worker_limit_control() -> None:
    """How many jobs run at once (the job store's setting, for every page and worker of this store)."""
    try:
        limit, source = worker_limit(store)
    except ValueError as error:
        st.error(f"Queued jobs cannot start: {formatting.md(error)}")
        return
    wanted = st.number_input("Jobs running at once (more wait in the queue)", min_value=1, max_value=64, value=limit, step=1,
                             help=f"Now {limit}, from {source}. Each running job trains on its share of the CPU cores.")
    if wanted != limit:
        set_worker_limit(store, int(wanted))
        st.rerun()


st.title("Runs")
with st.container(border=True):
    new_exploration()
open_id = state.get(session.JOB)
if open_id:
    st.subheader(f"Run {formatting.md(open_id)}")
    live_job(store, open_id, draw_run)
all_runs()
worker_limit_control()

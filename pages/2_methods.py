"""Step 2, Methods: the methods to compare, their strength, the fine-tuning budget, objective and seeds."""
import streamlit as st

from ordercomp.dashboard import estimate, formatting, plan, session, views
from ordercomp.report.figures import duration
from ordercomp.exploration.executors import EXECUTORS, served_ray_addresses

from ordercomp.methods.registry import METHODS
from ordercomp.exploration.explorer import NO_SHIP, RUNTIMES
from ordercomp.order import LATENCY_OBJECTIVES, MAX_EXHAUSTIVE_METHODS, OBJECTIVES
from ordercomp.deploy.export import PROGRAM_FORMATS
from ordercomp.deploy.runtimes import runtime_name
from pages._shared import KEEP, run_inside_app

SEARCH_LABELS = {"surrogate": "surrogate (default)", "pairwise": "pairwise (the paper's)", "random": "random whole orders",
                 "exhaustive": "exhaustive: every order"}
SEARCH_HELP = ("surrogate: the pairwise chain, then whole orders around it, within 2× the pairwise plan's applications. "
               "pairwise: the paper's precedence graph, topologically sorted. random: random whole orders within the same "
               "budget. exhaustive: every order.")

run_inside_app()

store = session.open_store()
state = st.session_state
base_changed = plan.follow_base(state)
session.set_defaults(state, plan.plan_defaults())


def setting_widget(setting: plan.Setting) -> None:
    label = f"**{setting.name}** (strength)" if setting.strength else setting.name
    default = setting.default
    if setting.choices:
        st.selectbox(label, setting.choices, key=setting.key, **KEEP)
    elif isinstance(default, bool):
        st.checkbox(label, key=setting.key, **KEEP)
    elif isinstance(default, int):
        st.number_input(label, step=1, key=setting.key, **KEEP)
    elif isinstance(default, float) and setting.strength and 0 < default <= 1:
        st.slider(label, 0.0, 1.0, step=0.05, key=setting.key, **KEEP)
    elif isinstance(default, float):
        st.number_input(label, format="%g", key=setting.key, **KEEP)
    else:
        st.text_input(label, key=setting.key, **KEEP)


def method_card(name: str) -> None:
    method = METHODS[name]
    with st.container(border=True):
        st.markdown(f"**{method.title}** (`{name}`): {method.summary}")
        strength, *others = plan.method_settings(method)
        setting_widget(strength)
        if others:
            with st.expander("More settings"):
                for setting in others:
                    setting_widget(setting)


def budget_and_decision(chosen: list[str]) -> None:
    st.subheader("Fine-tuning budget and decision")
    left, middle, right = st.columns(3)
    left.number_input("Fine-tuning epochs per step (the same for every step)", min_value=0.0, max_value=1000.0, step=0.5,
                      key="w_epochs", **KEEP)
    left.number_input("Learning rate", min_value=1e-6, max_value=1.0, format="%g", key="w_lr", **KEEP)
    middle.selectbox("Objective", list(OBJECTIVES), key="w_objective", help="\n".join(f"- {name}: {text}" for name, (_, text) in OBJECTIVES.items()),
                     **KEEP)
    middle.caption(formatting.md(OBJECTIVES[state["w_objective"]][1]))
    if state["w_objective"].startswith("weighted"):
        cost = "latency" if state["w_objective"] == "weighted_latency" else "BitOps"
        middle.number_input(f"Weight: accuracy points per halving of {cost}", min_value=0.0, format="%g", key="w_weight", **KEEP)
    if state["w_objective"] in LATENCY_OBJECTIVES:
        middle.selectbox("Measure latency in (the order is chosen for this runtime)", RUNTIMES, key="w_runtime", **KEEP,
                         format_func=lambda name: "PyTorch eager" if name == "eager" else f"{runtime_name(name)}: {name}")
    middle.number_input("Minimum margin (accuracy points) for a pair to count as decided", min_value=0.0, format="%g",
                        key="w_min_margin", **KEEP)
    right.number_input("Seeds (each comparison is repeated this often)", min_value=1, max_value=50, step=1, key="w_seeds", **KEEP)
    right.selectbox("Device", ["auto", "cpu", "cuda"], key="w_device", help="auto: CUDA when a GPU is present, else the CPU", **KEEP)
    right.checkbox(f"Exhaustive validation: also run every order (at most {MAX_EXHAUSTIVE_METHODS} methods)", key="w_exhaustive",
                   **KEEP)
    if state["w_repeat"] not in [plan.NO_REPEAT, *chosen]:
        state["w_repeat"] = plan.NO_REPEAT
    right.selectbox("Repeat one method after the chain (does applying it twice help?)", [plan.NO_REPEAT, *chosen],
                    key="w_repeat", **KEEP)
    right.selectbox("How the order is chosen", list(SEARCH_LABELS), key="w_search", format_func=SEARCH_LABELS.get, help=SEARCH_HELP,
                    **KEEP)
    if state["w_search"] != "pairwise":
        right.number_input("Settle an open choice: at most this many more method applications (0: never)", min_value=0,
                           step=10, key="w_settle", **KEEP,
                           help="When the recommended order could still trail an order it cannot be separated from by more "
                                "than the minimum margin, race those orders on more seeds until none could.")
    right.selectbox("Ship the recommended chain as (written, checked and timed at the end: the headline)",
                    [*PROGRAM_FORMATS, NO_SHIP], key="w_ship", **KEEP,
                    format_func=lambda name: "no file (the simulation's figures)" if name == NO_SHIP else f"{name}: {runtime_name(name)}")
    right.selectbox("Run the steps", EXECUTORS, key="w_executor", **KEEP,
                    format_func=lambda name: {"inprocess": "in the job's process", "ray": "as Ray tasks"}[name])
    if state["w_executor"] == "ray":
        offered = ", ".join(served_ray_addresses()) or "none"
        right.text_input(f"Ray cluster address (empty starts a local one; this server's operator offers: {offered})", key="w_ray_address",
                         **KEEP)


def plan_summary() -> None:
    st.subheader("Cost")
    try:
        spec = plan.plan_from_state(state)
    except ValueError as error:
        st.error(f"This plan cannot run: {formatting.md(error)}")
        return
    cost = views.exploration_cost(store, spec, session.base_choice(state))
    left, right = st.columns(2)
    left.metric("Method applications", cost["applications"], help="At most: the search may find its order with fewer")
    left.caption(f"{estimate.applications_text(spec, cost)}. Pairwise needs n + n(n−1) = {cost['pairwise_per_seed']} per "
                 f"seed; every order (exhaustive) {cost['exhaustive_per_seed']}.")
    right.metric("Estimated time", f"about {duration(cost['seconds'])}")
    right.caption(f"{cost['seconds_each']:.1f} s per application, {cost['basis']}.")
    st.page_link("pages/3_runs.py", label="Next: launch it on the Runs page", icon=":material/play_circle:")


st.title("Methods")
st.caption(f"Base: {formatting.md(plan.describe_base(session.base_choice(state)))} (change it on Model & data).")
if base_changed:
    st.info(f"The methods, their settings and the learning rate are {formatting.md(session.base_choice(state)['model'])}'s defaults "
            f"({', '.join(state['w_methods'])}; {state['w_lr']:g}): the base changed since they were set.")
st.multiselect("Methods to compare (two or more)", list(METHODS), key="w_methods",
               format_func=lambda name: f"{METHODS[name].title} ({name})", **KEEP)
chosen = list(state["w_methods"])
columns = st.columns(2)
for index, name in enumerate(chosen):
    with columns[index % 2]:
        method_card(name)
budget_and_decision(chosen)
plan_summary()

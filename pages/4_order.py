"""Step 4, Order: how sure the evidence is, the pair outcomes, the precedence graph, the whole orders evaluated,
the orders that keep every precedence edge and the exhaustive check."""
import streamlit as st

from ordercomp.dashboard import formatting, plan, session
from ordercomp.report.charts import pair_matrix_figure, precedence_caption, precedence_dot
from ordercomp.report.figures import applications, cache_hits_text, cache_stopped_caveat, duration, plural, steps_caveat
from ordercomp.report.meeting import evidence_sentence, exhaustive_table, notes
from ordercomp.report.verdict import SETTLE_SEEDS, settle_suggestion
from ordercomp.jobs import start_job
from ordercomp.exploration.results import pairs_table, search_table
from ordercomp.order import chain_text
from pages._shared import open_exploration, run_inside_app

run_inside_app()


def settle_button(record: dict) -> None:
    """When the choice is open: rerun the exploration allowed to race the orders in contention on more seeds."""
    settle = settle_suggestion(record.get("search") or {})
    if not settle:
        return
    if st.button(f"Settle it: race these orders on up to {SETTLE_SEEDS} more seeds (a settle budget of {settle} method applications)",
                 help="Runs this exploration again as a new run; every step already run comes from the cache, so only "
                      "the new seeds cost."):
        try:
            settled = start_job(store, plan.settle_spec(record, settle))
        except (ValueError, OSError) as error:
            st.error(f"Could not start settling: {formatting.md(error)}")
            return
        session.open_job(st.session_state, st.query_params, settled)
        st.switch_page("pages/3_runs.py")


store = session.open_store()
st.title("Order")
job_id, record = open_exploration(store)
spec, chain = record["spec"], record["chain"]
search = record.get("search") or {"strategy": "pairwise"}
st.markdown(f"### Recommended order: {chain_text(chain)}")
st.caption(f"Run {formatting.md(job_id)} · {formatting.md(plan.describe_base(spec))} · objective {spec['objective']} · "
           f"{plural(spec['seeds'], 'seed')} · search {search['strategy']} · {applications(record)} method applications"
           f"{cache_hits_text(record)} · {duration(record['seconds'])} of wall time")
st.info(evidence_sentence(record))
if caveat := cache_stopped_caveat(record):
    st.warning(formatting.md(caveat))
settle_button(record)

st.subheader("Pair outcomes")
st.caption("mean diff > 0: first → second scored better than the reverse. The interval combines seed-to-seed variation with "
           "the paired per-image evidence (both orders on the same validation images); a pair is a tie when its interval "
           "contains 0 or its mean is below the minimum margin.")
if caveat := steps_caveat(record["steps"]):  # the latency objectives' pairs and orders are timings
    st.caption(formatting.md(caveat))
st.dataframe(pairs_table(record["outcomes"]), hide_index=True)
st.plotly_chart(pair_matrix_figure(record))

st.subheader("Precedence graph")
st.caption(precedence_caption(record))
st.graphviz_chart(precedence_dot(record))
for line in notes(record):
    st.markdown(f"- {formatting.md(line)}")

ranked = search_table(record)
if ranked is not None:
    st.subheader(f"Whole orders evaluated by the {search['strategy']} search")
    st.caption("Each order applied in full to the base on every seed (validation split; the race gives the orders still in "
               "contention extra seeds); regret: the best evaluated order's mean score minus this one's; P(best): the "
               "probability that the order is the best of these, from the paired seed and per-image evidence; race: "
               "dropped once a paired interval put it below the leader, else not separated from it.")
    st.dataframe(ranked, hide_index=True)
    screened = search_table(record, "screened_orders")
    if screened is not None and search.get("screen") is None:
        st.caption(f"With two seeds or more, the search ran {len(screened)} orders on the first seed and measured its best "
                   "on the other seeds: the table above. The first seed chose them, so its scores favour them and the "
                   "evidence above leaves it out.")
        with st.expander(f"The {len(screened)} orders the search ran on the first seed"):
            st.dataframe(screened, hide_index=True)
    elif screened is not None:
        st.caption(f"The search screened {len(screened)} orders at {search['screen']:g} of the epochs and measured its best "
                   "at the full budget: the table above.")
        with st.expander(f"The {len(screened)} orders screened at {search['screen']:g} of the epochs"):
            st.dataframe(screened, hide_index=True)

st.subheader("Orders that keep every precedence edge")
st.dataframe([{"order": chain_text(c), "recommended": "★" if c == chain else ""} for c in record["valid_chains"]], hide_index=True)

st.subheader("Exhaustive validation")
ranking = exhaustive_table(record)
if ranking is None:
    st.info("Not run for this exploration: tick 'Exhaustive validation' on the Methods page to rank the chain against every order.")
else:
    summary = record["exhaustive"]
    st.metric("Rank of the recommended chain", f"{summary['rank']} of {summary['of']}" if summary["rank"] else "not ranked")
    st.caption(f"Pairwise needed {summary['applications_pairwise']} method applications, exhaustive "
               f"{summary['applications_exhaustive']} ({summary['cost_ratio']:.1f}x).")
    st.dataframe(ranking, hide_index=True)

st.page_link("pages/5_tradeoffs.py", label="Next: what the chain buys, on the Trade-offs page", icon=":material/scatter_plot:")

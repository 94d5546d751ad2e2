"""Step 5, Trade-offs: accuracy against BitOps, size and latency with the Pareto frontier, and the
chain step by step."""
import streamlit as st

from ordercomp.dashboard import formatting, session
from ordercomp.report.charts import AXES, chain_steps_figure, tradeoff_figure
from ordercomp.report.figures import STEP_FIGURES, steps_caveat
from ordercomp.exploration.results import chain_table
from pages._shared import headline_row, open_exploration, run_inside_app

run_inside_app()

store = session.open_store()
st.title("Trade-offs")
job_id, record = open_exploration(store)
st.caption(f"Run {formatting.md(job_id)}: the base and the chain are measured on the test split; single methods and pairs are "
           "validation means over the seeds.")

headline_row(record)
st.caption(STEP_FIGURES)
if caveat := steps_caveat(record["steps"] + record["chain_steps"]):
    st.caption(formatting.md(caveat))

for tab, axis in zip(st.tabs([f"Accuracy vs {AXES[axis][0]}" for axis in AXES]), AXES):
    with tab:
        st.plotly_chart(tradeoff_figure(record, axis), key=f"tradeoff-{axis}")

st.subheader("The chain step by step")
st.plotly_chart(chain_steps_figure(record), key="chain-steps")
st.dataframe(chain_table(record["base_metrics"], record["chain_steps"]), hide_index=True)

st.page_link("pages/6_export.py", label="Next: download the compressed model and the meeting report on the Export page",
             icon=":material/download:")

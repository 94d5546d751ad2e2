"""The dashboard's library side (`app.py` and `pages/` draw; nothing here draws or runs heavy work).

    session     the open exploration (session and `?job=`), the base choice, the job store
    plan        widgets <-> specs: the Methods form, the ExploreSpec it makes, baseline and export specs
    estimate    method applications of a plan and a time estimate
    views       jobs and models as the pages show them: titles, rows, pair progress, results
    formatting  numbers, sizes and durations as text

Uploaded files are checked in `ordercomp.uploads`; training, explorations and exports are jobs for
a worker process (`ordercomp.jobs`).
"""

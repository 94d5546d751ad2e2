"""Promises of the package layout that users and the dashboard rely on."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from ordercomp.methods.registry import METHODS

ROOT = Path(__file__).resolve().parents[1]


def test_the_order_core_and_the_job_store_import_without_torch():
    code = "import sys, ordercomp.order, ordercomp.jobs.store; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_every_registered_method_has_a_strength_field_with_a_default():
    for method in METHODS.values():
        assert hasattr(method.default_config(), method.strength)
        assert method.title and method.summary


def test_readme_test_command_is_what_ci_runs():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme_commands = [line for line in (root / "README.md").read_text().splitlines() if line.startswith("scripts/setup")]
    assert len(readme_commands) >= 2
    test_command = readme_commands[1].split("#")[0].strip()
    assert test_command in (root / ".ci" / "run").read_text()


def test_streamlit_toolbar_hides_the_deploy_button():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["toolbarMode"] in ("minimal", "viewer")


def test_the_dashboards_streamlit_config_watches_no_files_and_never_reruns_on_save():
    """Issue 15, item 1: the server watched the project folder, with the .venv scripts/setup makes there (5,152
    inotify watches, an overflowing queue), and kept a core busy with one idle tab open. What it costs then is
    measured in tests/test_browser.py; this is the setting that makes it so, for `streamlit run app.py` from here."""
    server = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["server"]
    assert server["fileWatcherType"] == "none" and server["runOnSave"] is False


def test_the_dashboards_streamlit_config_runs_no_full_garbage_collection_after_each_rerun():
    """Issue 15, item 1: with a tab open on a running job, the server took 35-40 % of a core (py-spy: most of it in
    the gc.collect(2) Streamlit runs after every script run, fragments included, with torch, pandas and plotly
    loaded), and the dashboard's exploration took 1.48x the command line's (bench_dashboard, idle machine).
    Without it: 2.0-2.4 % of a core, the server's memory unchanged over a minute of polling."""
    runner = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["runner"]
    assert runner["postScriptGC"] is False

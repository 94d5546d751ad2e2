"""Untrusted files through the CLI: for each reproduction of the issue-19 audit, the exit code, how many
lines it printed, whether a marker file appeared (code ran) or the results folder was created, and the
process's peak memory (GNU time's maximum RSS; the CLI alone, with torch imported, peaks near 1 GB).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_untrusted.py
"""
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import torch
import untrusted_data as ud
import untrusted_files as uf

from ordercomp.models.zoo import create_model

root = Path(tempfile.mkdtemp(prefix="bench-untrusted-"))
print(f"torch {torch.__version__}, Python {platform.python_version()} (peak memory does not depend on the CPU kind)")
marker = root / "MARKER"
torch.manual_seed(0)
genuine = uf.genuine_pt2(create_model("cnn_tiny", 10, 1))
cases = {}
(root / "sympy.pt2").write_bytes(uf.sympy_in_batch_size(genuine, marker)); cases["pt2 sympy payload"] = ["explore", "--model", str(root / "sympy.pt2")]
(root / "empty.pt2").write_bytes(uf.empty_weight_declaring(genuine)); cases["pt2 declaring 750M floats"] = ["explore", "--model", str(root / "empty.pt2")]
(root / "notes.pt").write_bytes(uf.NOTES); cases["text file as state dict"] = ["explore", "--model", str(root / "notes.pt"), "--arch", "cnn_tiny"]
ud.cifar_folder(root / "strided", {"data_batch_1": ud.strided_batch()}); cases["CIFAR stride-0 batch"] = ["explore", "--data", str(root / "strided")]
ud.cifar_folder(root / "nested", {"data_batch_1": ud.nested_labels_batch()}); cases["CIFAR nested labels"] = ["explore", "--data", str(root / "nested")]
for name, args in cases.items():
    out = root / ("out-" + re.sub(r"\W", "_", name))
    run = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M", sys.executable, "-m", "ordercomp.cli", *args, "--cache", "", "--out", str(out), "--quiet"],
                         capture_output=True, text=True, timeout=900)
    lines = [l for l in run.stderr.splitlines() if not l.startswith(("MAXRSS", "Command exited"))]
    rss = int(re.search(r"MAXRSS (\d+)", run.stderr).group(1)) / 1024
    print(f"{name:28s} exit {run.returncode}  stderr lines {len(lines)}  peak {rss:6.0f} MB  marker {marker.exists()}  out {out.exists()}  | {lines[-1][:110] if lines else ''}")
shutil.rmtree(root)

"""End-to-end browser test of the dashboard: the real app, real worker processes, a real Chromium.

A new user's path, small enough for a 2-core machine: keep the embedded digits and the sample
`digits_cnn`, measure its baseline, compare two cheap methods (prune, quantize) with one seed and
one epoch of fine-tuning, launch the exploration, follow it to the end (it survives a reload),
look at the order and the trade-offs, export the chain and download the TorchScript and .pt2
files, which are loaded back here and run on the digits test split.

It also writes the README's screenshots, one per page, to docs/screenshots/.

Needs Chromium at /usr/bin/chromium (`scripts/setup --test` installs it); Playwright's own browser
downloads are not used.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the browser fixture fails with what to run
    expect = sync_playwright = PlaywrightTimeout = None

ROOT = Path(__file__).resolve().parent.parent
STREAMLIT = ROOT / ".venv" / "bin" / "streamlit"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = ROOT / "docs" / "screenshots"
VIEWPORT = {"width": 1400, "height": 900}
SERVER_START_S = 180       # s: a cold start on a busy machine
PAGE_S = 180_000          # ms: a page switch, a rerun or a download on a busy 2-core machine
JOB_S = 900_000           # ms: an exploration or export job in its worker (minutes on a heavily shared machine)
EXPECTED_METHODS = ["prune", "quantize"]

if expect is not None:
    expect.set_options(timeout=PAGE_S)


# --- the app, its workers and the browser -------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"streamlit did not answer {url}/_stcore/health within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains `text` (the workers of our store), this process excluded."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if text.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


def stop(pid: int, *, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The dashboard on a free port with its own job store; stops it and every worker it spawned."""
    if not STREAMLIT.exists():
        pytest.fail(f"{STREAMLIT} is missing: run scripts/setup --test")
    folder = tmp_path_factory.mktemp("browser-store")
    store = folder / "jobs.sqlite"
    log = folder / "streamlit.log"
    port = free_port()
    env = os.environ | {"ORDERCOMP_STORE": str(store)}
    with open(log, "wb") as output:
        server = subprocess.Popen([str(STREAMLIT), "run", "app.py", "--server.headless", "true", "--server.port", str(port),
                                   "--browser.gatherUsageStats", "false"],
                                  cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server, log)
        yield {"url": url, "store": store, "log": log}
    finally:
        stop(server.pid, group=True)  # the server and anything left in its session
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        # Workers run in sessions of their own (they outlive a page): find them by the store path.
        for _ in range(3):
            pids = processes_mentioning(str(store))
            if not pids:
                break
            for pid in pids:
                try:
                    leader = os.getpgid(pid) == pid  # a worker leads its own session: stop its children too
                except ProcessLookupError:
                    continue
                stop(pid, group=leader)
            time.sleep(0.5)
        assert not processes_mentioning(str(store)), "worker processes of the test's store are still running"


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        pytest.fail("Playwright is not installed: run scripts/setup --test")
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: run scripts/setup --test (it installs Debian's chromium); "
                    "the browser test does not use Playwright's browser downloads")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(PAGE_S)
    yield page
    context.close()


# --- helpers -------------------------------------------------------------------------------------

def main(page):
    return page.get_by_test_id("stMain")


def go(page, title: str, heading: str | None = None) -> None:
    """Switch pages with the sidebar navigation (the session, and so the widget values, stay)."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
    expect(main(page).get_by_role("heading", name=heading or title, exact=True)).to_be_visible()
    settle(page)


def settle(page, quiet_ms: int = 700) -> None:
    """Wait until the script run is over (no 'Running' indicator) and the page stayed quiet a moment."""
    deadline = time.monotonic() + PAGE_S / 1000
    quiet_since = None
    while time.monotonic() < deadline:
        running = page.get_by_test_id("stStatusWidget").count()  # shown only while running or connecting
        stale = page.locator("[data-stale='true']").count()
        if running or stale:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_ms / 1000:
            return
        page.wait_for_timeout(100)


def set_number(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    expect(box).to_have_value(value)
    settle(page)


def pick(page, label: str, option: str) -> None:
    """Choose `option` in the selectbox labelled `label`."""
    page.get_by_role("combobox", name=label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()
    settle(page)


def remove_chips(page, labels: list[str]) -> None:
    for label in labels:
        page.get_by_role("button", name=f"Remove {label}", exact=True).click()
        expect(page.get_by_role("button", name=f"Remove {label}", exact=True)).to_have_count(0)
        settle(page)


def screenshot(page, name: str) -> None:
    """The whole page as docs/screenshots/<name>.png.

    Streamlit scrolls inside its main element, not the document, so a full-page screenshot alone
    shows one screen: the viewport is stretched to the page's height for the picture."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    settle(page)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    page.mouse.move(0, 0)  # no hovered button and no focused widget in the picture
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    height = 0
    for _ in range(5):  # charts re-lay themselves out after a resize: until the height holds
        wanted = max(VIEWPORT["height"], page.get_by_test_id("stMain").evaluate("main => main.scrollHeight"))
        if wanted == height:
            break
        height = wanted
        page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
        page.wait_for_timeout(700)  # layout, and the charts' entry animation
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    page.set_viewport_size(VIEWPORT)


def job_in_url(page) -> str:
    match = re.search(r"[?&]job=([0-9a-f]+)", page.url)
    assert match, f"no ?job= in {page.url}"
    return match.group(1)


def accuracy_of(model, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(images)
    assert tuple(logits.shape) == (len(images), 10)
    return float((logits.argmax(1) == labels).float().mean())


# --- the test ------------------------------------------------------------------------------------

@pytest.mark.timeout(3600)
def test_a_new_user_finds_the_order_and_downloads_the_compressed_model(page, app, tmp_path):
    started = time.monotonic()
    laps: dict[str, float] = {}

    def lap(name: str) -> None:
        laps[name] = time.monotonic() - started - sum(laps.values())

    # 1. Model & data: the defaults (embedded digits, sample digits_cnn); measure the baseline here.
    page.goto(app["url"] + "/")
    expect(main(page).get_by_role("heading", name="Model & data", exact=True)).to_be_visible()
    expect(page.get_by_role("radio", name="Embedded digits (default)")).to_be_checked()
    expect(page.get_by_role("radio", name="Sample model")).to_be_checked()
    expect(page.get_by_role("combobox", name="Sample model")).to_have_value("digits_cnn")
    expect(main(page).get_by_text("Explorations start from digits_cnn on digits.")).to_be_visible()
    page.get_by_role("button", name="Measure the baseline on this machine").click()
    expect(main(page).get_by_text(re.compile(r"^Measured on \w+, test split of digits"))).to_be_visible(timeout=JOB_S)
    expect(main(page).get_by_text("done", exact=True)).to_be_visible()
    screenshot(page, "1_model_and_data")
    lap("model")

    # 2. Methods: two cheap methods, one seed, one epoch of fine-tuning (half an epoch leaves a pruned
    #    digits_cnn near 22%: the pictures would mislead), on the CPU.
    go(page, "Methods")
    remove_chips(page, ["Knowledge distillation (distill)", "Early exit (early_exit)"])
    chips = page.get_by_role("group", name="Selected values").get_by_title(re.compile(r"\((\w+)\)$"))
    expect(chips).to_have_text(["Structured pruning (prune)", "Quantization-aware training (quantize)"])
    set_number(page, "Fine-tuning epochs per step (the same for every step)", "1.00")
    set_number(page, "Seeds (each comparison is repeated this often)", "1")
    pick(page, "Device", "cpu")
    # (2 singles + 2 ordered pairs) x 1 seed + the chain's 2 applications
    applications = page.get_by_test_id("stMetric").filter(has_text="Method applications")
    expect(applications.get_by_test_id("stMetricValue")).to_have_text("6")
    screenshot(page, "2_methods")
    lap("methods")

    # 3. Runs: the plan from Methods; launch it, its id goes to the URL; follow it to the end.
    go(page, "Runs")
    summary = main(page).get_by_text(re.compile(r"methods prune, quantize"))
    expect(summary).to_contain_text("1 seed(s)")
    expect(summary).to_contain_text("1 fine-tuning epoch(s) per step")
    page.get_by_role("button", name="Launch exploration").click()
    expect(page).to_have_url(re.compile(r"/runs\?(.*&)?job=[0-9a-f]+"))
    expect(main(page).get_by_role("heading", name=re.compile(r"^Run [0-9a-f]+$"))).to_be_visible()
    job = job_in_url(page)
    expect(main(page).get_by_role("heading", name=f"Run {job}", exact=True)).to_be_visible()
    expect(page.get_by_test_id("stSidebar").get_by_text(f"job {job}", exact=False)).to_be_visible()
    recommended = main(page).get_by_text(re.compile(r"^Recommended order: "))
    expect(recommended).to_be_visible(timeout=JOB_S)
    chain_text = recommended.inner_text().removeprefix("Recommended order: ").strip()
    chain = chain_text.split(" → ")
    assert sorted(chain) == sorted(EXPECTED_METHODS), chain_text
    expect(main(page).get_by_text(re.compile(rf"\bdone · job {job}$"))).to_be_visible()
    expect(main(page).get_by_text(re.compile(r"^(\d+) of \1 method applications finished$"))).to_be_visible()
    pairs = main(page).get_by_test_id("stDataFrame").first
    expect(pairs).to_be_visible()
    main(page).get_by_test_id("stExpander").filter(has_text="Log").get_by_text("Log", exact=True).click()
    log = main(page).get_by_test_id("stCode")
    expect(log).to_contain_text("prune -> quantize (seed 0): ok")
    expect(log).to_contain_text("quantize -> prune (seed 0)")
    expect(log).to_contain_text("done in ")
    settle(page)
    screenshot(page, "3_runs")
    lap("runs")

    # The run survives a reload: a fresh session takes the job from the URL.
    page.reload()
    expect(main(page).get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    expect(main(page).get_by_role("heading", name=f"Run {job}", exact=True)).to_be_visible()
    expect(main(page).get_by_text(re.compile(rf"\bdone · job {job}$"))).to_be_visible()
    expect(main(page).get_by_text(f"Recommended order: {chain_text}", exact=True)).to_be_visible()
    assert job_in_url(page) == job

    # 4. Order: the chain and the precedence graph (Graphviz draws an SVG with both methods).
    go(page, "Order", heading=f"Recommended order: {chain_text}")
    assert job_in_url(page) == job
    graph = main(page).get_by_test_id("stGraphVizChart")
    expect(graph.locator("svg")).to_be_visible()
    for method in EXPECTED_METHODS:
        expect(graph.locator("svg g.node").filter(has_text=method)).to_have_count(1)
    expect(main(page).get_by_test_id("stPlotlyChart")).to_have_count(1)
    expect(main(page).get_by_role("heading", name="Every valid order", exact=True)).to_be_visible()
    screenshot(page, "4_order")
    lap("order")

    # 5. Trade-offs: headline figures, one chart per tab and the chain step by step.
    go(page, "Trade-offs")
    assert job_in_url(page) == job
    expect(page.get_by_test_id("stMetric").filter(has_text="Fewer BitOps than the base")).to_be_visible()
    charts = main(page).get_by_test_id("stPlotlyChart")
    expect(charts.first.locator(".main-svg").first).to_be_visible()
    expect(charts.last.locator(".main-svg").first).to_be_visible()
    expect(main(page).get_by_text("Accuracy against BitOps").first).to_be_attached()
    expect(main(page).get_by_role("tab")).to_have_count(3)
    screenshot(page, "5_tradeoffs")
    lap("tradeoffs")

    # 6. Export: the recommended chain to TorchScript and .pt2, as a background job; download both.
    go(page, "Export")
    assert job_in_url(page) == job
    expect(main(page).get_by_text(f"{chain_text}: the recommended chain.")).to_be_visible()
    remove_chips(page, ["ONNX (checked in onnxruntime)", "state dict"])
    page.get_by_role("button", name="Apply and export").click()
    expect(main(page).get_by_text("Every file loads back, runs and matches its checksum.")).to_be_visible(timeout=JOB_S)
    images, labels = _digits_test_split()
    loaded = {}
    for label in ("TorchScript", "torch.export (.pt2)", "int8 ONNX (onnxruntime)"):
        loaded[label] = download_file(page, label, tmp_path)
    assert loaded["TorchScript"].name == "model.torchscript.pt" and loaded["torch.export (.pt2)"].name == "model.pt2"
    expect(main(page).get_by_role("button", name="All as a zip")).to_be_visible()
    screenshot(page, "6_export")
    lap("export")

    from ordercomp.models.checkpoints import load_program

    torchscript = torch.jit.load(str(loaded["TorchScript"]), map_location="cpu").eval()
    program = load_program(loaded["torch.export (.pt2)"])
    for model in (torchscript, program):
        accuracy = accuracy_of(model, images, labels)
        assert accuracy > 0.5, f"the exported model is right on only {accuracy:.0%} of the digits test split"
    with torch.no_grad():
        agree = (torchscript(images).argmax(1) == program(images).argmax(1)).float().mean()
    assert agree >= 0.99, f"TorchScript and .pt2 agree on only {agree:.0%} of the test images"
    import onnxruntime as ort  # the downloaded int8 ONNX runs in onnxruntime on its own

    session = ort.InferenceSession(str(loaded["int8 ONNX (onnxruntime)"]), providers=["CPUExecutionProvider"])
    int8_logits = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    int8_accuracy = float((int8_logits.argmax(1) == labels.numpy()).mean())
    assert int8_accuracy > 0.5, f"the int8 ONNX model is right on only {int8_accuracy:.0%} of the digits test split"
    print(f"\nbrowser flow: {time.monotonic() - started:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in laps.items())}); "
          f"chain {chain_text}, exported accuracy {accuracy:.1%}")


def download_file(page, label: str, folder):
    """Click a download button and save the file. The file is read when the button is clicked (a script
    rerun); a click that lands while the page is still rerunning can be lost, so it is clicked once more."""
    for attempt in range(2):
        try:
            with page.expect_download(timeout=PAGE_S // 2) as download_info:
                main(page).get_by_role("button", name=label, exact=True).click()
            break
        except PlaywrightTimeout:
            if attempt:
                raise
    download = download_info.value
    path = folder / download.suggested_filename
    download.save_as(path)
    return path


def _digits_test_split() -> tuple[torch.Tensor, torch.Tensor]:
    from ordercomp.data.datasets import load_data

    images, labels = load_data("digits").test.tensors
    return images, labels

"""The Gradio demo, driven end to end in a real headless Chromium (Debian's `chromium` package) with Playwright:
load the page, upload videos, pick an example, query, and read the ranked result, checked against the model's own
scores; then labels mode, and the errors a person sees. Skipped only when chromium is not installed."""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from clip2video.modeling_clip2video import CLIP2VideoModel
from tiny_checkpoint import COLOURS, save_tiny_checkpoint, tiny_processor, write_video


REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 120_000  # the machine running the tests may be busy
QUERY = "a red square slides to the right"
LABELS = ["red", "blue", "green"]
# How the page shows one video of the result, in each mode.
QUERY_ROW = r"^(\S+) \| score (-?[\d.]+) \| best moment ([\d.]+) s$"
LABELS_ROW = r"^(\S+) \| (\w+ [\d.]+)(, \w+ [\d.]+)*$"

LIMIT_BYTES = 5_000  # the demo's upload limit in this test

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    checkpoint = save_tiny_checkpoint(folder / "checkpoint", with_apps=False)
    uploads = {
        "red.mp4": write_video(folder / "red.mp4", COLOURS["red"], num_frames=30),
        "blue.mp4": write_video(folder / "blue.mp4", COLOURS["blue"], num_frames=12),
    }
    (folder / "examples").mkdir()
    examples = {"green.mp4": write_video(folder / "examples" / "green.mp4", COLOURS["green"], moving=False)}
    write_video(folder / "examples" / "yellow.mp4", COLOURS["yellow"])
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really")
    # Over the demo's upload limit (set below); the other videos are under it.
    write_video(folder / "large.mp4", num_frames=200, size=96)
    large = (folder / "large.mp4").stat().st_size
    assert large > LIMIT_BYTES > max(Path(video).stat().st_size for video in uploads.values()), large
    port = free_port()
    log = open(folder / "app.log", "w")
    environment = {
        **os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "GRADIO_ANALYTICS_ENABLED": "False",
        "CLIP2VIDEO_MAX_INPUT_BYTES": str(LIMIT_BYTES),
    }
    app = subprocess.Popen(
        [sys.executable, str(REPO / "apps" / "demo" / "app.py"), "--model", str(checkpoint),
         "--examples_dir", str(folder / "examples"), "--port", str(port)],
        cwd=folder, env=environment, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 240
        while True:
            if app.poll() is not None:
                pytest.fail(f"the demo exited with code {app.returncode}:\n{(folder / 'app.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the demo did not start in 240 s:\n{(folder / 'app.log').read_text()[-3000:]}")
                time.sleep(1)
        yield {"url": url, "checkpoint": checkpoint, "uploads": uploads, "examples": examples, "folder": folder}
    finally:
        app.terminate()
        app.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def page(demo):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("The browser test needs Playwright for Python: `pip install playwright` (no `playwright install`).")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(demo["folder"] / "chromium-profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.goto(demo["url"])
        yield page
        context.close()


def run_and_read(page, expected_rows: int, row_pattern: str) -> list[str]:
    """Click the button and return the lines of the result once `expected_rows` lines match `row_pattern` (the
    previous result stays on the page while the new one is computed)."""
    page.locator("#run").click()
    page.wait_for_function(
        """([rows, pattern]) => {
            const items = [...document.querySelectorAll('#ranking li')].map(item => item.innerText.trim());
            return items.length === rows && items.every(text => new RegExp(pattern).test(text));
        }""",
        arg=[expected_rows, row_pattern],
        timeout=TIMEOUT_MS,
    )
    return [item.inner_text().strip() for item in page.locator("#ranking li").all()]


def test_rank_then_classify_uploaded_and_picked_videos(demo, page):
    page.locator("#upload input[type=file]").set_input_files(list(demo["uploads"].values()))
    page.get_by_label("green.mp4").check()
    page.locator("#text textarea").fill(QUERY)
    rows = run_and_read(page, 3, QUERY_ROW)

    videos = list(demo["uploads"].values()) + list(demo["examples"].values())
    names = [Path(video).name for video in videos]
    model = CLIP2VideoModel.from_pretrained(demo["checkpoint"]).eval()
    processor = tiny_processor()
    with torch.no_grad():
        scores = model(**processor(text=[QUERY], videos=videos, return_tensors="pt")).logits_per_text[0]
    expected = torch.argsort(scores, descending=True, stable=True).tolist()

    parsed = [re.fullmatch(QUERY_ROW, row) for row in rows]
    assert all(parsed), rows
    assert [match[1] for match in parsed] == [names[i] for i in expected]
    assert [float(match[2]) for match in parsed] == pytest.approx(scores[expected].tolist(), abs=1e-3)
    # One thumbnail per video, captioned in the same order.
    page.wait_for_function("document.querySelectorAll('#gallery img').length === 3", timeout=TIMEOUT_MS)
    captions = page.locator("#gallery").inner_text()
    positions = [captions.index(names[i]) for i in expected]
    assert positions == sorted(positions), captions

    page.get_by_label("Classify with labels").check()
    page.locator("#text textarea").fill(", ".join(LABELS))
    rows = run_and_read(page, 3, LABELS_ROW)
    with torch.no_grad():
        inputs = processor(text=[f"a video of {label}." for label in LABELS], videos=videos, return_tensors="pt")
        probabilities = model(**inputs).logits_per_video.softmax(dim=-1)
    for row, name, row_probabilities in zip(rows, names, probabilities.tolist()):
        video_name, labels = row.split(" | ")
        assert video_name == name
        shown = dict(item.rsplit(" ", 1) for item in labels.split(", "))
        assert {label: float(p) for label, p in shown.items()} == pytest.approx(
            dict(zip(LABELS, row_probabilities)), abs=1e-3
        )


def test_errors_are_shown_to_the_person(demo, page):
    page.reload()
    page.locator("#text textarea").fill(QUERY)
    page.locator("#run").click()
    page.get_by_text("Upload a video or pick an example first.").first.wait_for(timeout=TIMEOUT_MS)

    page.reload()
    page.locator("#upload input[type=file]").set_input_files([str(demo["folder"] / "broken.mp4")])
    page.locator("#text textarea").fill(QUERY)
    page.locator("#run").click()
    page.get_by_text(re.compile(r"Cannot read video .*broken\.mp4")).first.wait_for(timeout=TIMEOUT_MS)

    # An upload over the limit is refused with a message naming the limit.
    page.reload()
    page.locator("#upload input[type=file]").set_input_files([str(demo["folder"] / "large.mp4")])
    page.locator("#text textarea").fill(QUERY)
    page.locator("#run").click()
    page.get_by_text(re.compile(r"(exceed|over).*(maximum|limit)", re.IGNORECASE)).first.wait_for(timeout=TIMEOUT_MS)

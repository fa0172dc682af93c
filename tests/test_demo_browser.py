"""The Gradio demo, driven end to end in a real headless Chromium (Debian's `chromium` package) with Playwright.

The collection is 8 clips of the project's synthetic data set (`training.synthetic`: a coloured square or cross that
moves, grows or shrinks), indexed by the demo at start-up with the project's video search. The model is the tiny
test configuration trained in the fixture, for a few seconds, on those 8 clips and their captions until every
caption's own clip scores first by a margin: a query then has a right answer ("a red square moves left" -> its clip,
not "... moves right", which holds the same square), and the page must show it first. Every number on the page is
also checked against the model's own forward pass over the video files (scores, best moments, label probabilities).
Skipped only when chromium is not installed.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.pipelines.pipeline_clip2video import DEFAULT_HYPOTHESIS_TEMPLATE
from clip2video.training.synthetic import SyntheticConfig, render_clip, write_mp4
from tests.helpers.models import tiny_checkpoint_config, tiny_processor
from tests.helpers.servers import free_port, wait_until_serving
from tests.helpers.videos import COLOURS, write_square_video


REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
TIMEOUT_MS = 120_000  # the machine running the tests may be busy
# (colour, shape, motion) of each example clip, named 000000.mp4, 000001.mp4, ... like the synthetic test split.
CLIPS = [
    ("red", "square", "moves left"), ("red", "square", "moves right"), ("blue", "cross", "moves up"),
    ("blue", "square", "moves down"), ("green", "square", "grows"), ("green", "cross", "shrinks"),
    ("yellow", "cross", "moves left"), ("purple", "square", "moves right"),
]
QUERY = "a red square moves left"  # CLIPS[0]; CLIPS[1] has the same square moving the other way
LABELS = ["red", "blue", "green"]
LIMIT_BYTES = 5_000  # the demo's upload limit in this test

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"),
    pytest.mark.slow,  # trains the tiny model and starts the demo and a browser
]


def caption(clip) -> str:
    return "a {} {} {}".format(*clip)


def train_tiny_model(videos: list[str], captions: list[str], folder: Path, max_steps: int = 300) -> Path:
    """The tiny test model trained on these caption-video pairs (full batch, the model's own contrastive loss) until
    every caption's own video scores first by at least 1 logit; saved with its processor to `folder`."""
    processor = tiny_processor()
    inputs = processor(text=captions, videos=videos, return_tensors="pt")
    torch.manual_seed(0)
    model = CLIP2VideoModel(tiny_checkpoint_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses time to threads on a shared machine
    try:
        for _ in range(max_steps):
            output = model(**inputs, return_loss=True)
            logits = output.logits_per_text.detach()
            own = logits.diagonal()
            others = logits.masked_fill(torch.eye(len(captions), dtype=torch.bool), -float("inf")).amax(dim=1)
            if (own - others).min() > 1.0:
                break
            optimizer.zero_grad()
            output.loss.backward()
            optimizer.step()
        else:
            pytest.fail(f"the tiny model did not learn the {len(captions)} clips in {max_steps} steps")
    finally:
        torch.set_num_threads(threads)
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    examples = folder / "examples"
    examples.mkdir()
    rng, config = np.random.default_rng(0), SyntheticConfig()
    clips = []
    for number, (colour, shape, motion) in enumerate(CLIPS):
        path = examples / f"{number:06d}.mp4"
        write_mp4(path, render_clip(colour, shape, motion, rng, config), config.frames_per_second)
        clips.append(str(path))
    checkpoint = train_tiny_model(clips, [caption(clip) for clip in CLIPS], folder / "checkpoint")
    uploads = {
        "red.mp4": write_square_video(folder / "red.mp4", COLOURS["red"], num_frames=30),
        "blue.mp4": write_square_video(folder / "blue.mp4", COLOURS["blue"], num_frames=12),
    }
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really")
    # Over the demo's upload limit (set below); the other videos are under it.
    write_square_video(folder / "large.mp4", num_frames=200, size=96)
    large = (folder / "large.mp4").stat().st_size
    assert large > LIMIT_BYTES > max(Path(video).stat().st_size for video in [*uploads.values(), *clips]), large
    port = free_port()
    log = open(folder / "app.log", "w")
    environment = {
        **os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "GRADIO_ANALYTICS_ENABLED": "False",
        "CLIP2VIDEO_MAX_INPUT_BYTES": str(LIMIT_BYTES), "OMP_NUM_THREADS": "1",
    }
    app = subprocess.Popen(
        [sys.executable, str(REPO / "apps" / "demo" / "app.py"), "--model", str(checkpoint),
         "--examples_dir", str(examples), "--index_root", str(folder / "indexes"), "--port", str(port)],
        cwd=folder, env=environment, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(app, url, timeout=240, log=(folder / "app.log").read_text)
        yield {"url": url, "checkpoint": checkpoint, "uploads": uploads, "clips": clips, "folder": folder}
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
            str(demo["folder"] / "chromium-profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.goto(demo["url"])
        yield page
        context.close()


@pytest.fixture(scope="module")
def reference(demo):
    """The model's own forward pass over the example files: `logits_per_text` for the query, each clip's best
    moment for it, and label probabilities."""
    model = CLIP2VideoModel.from_pretrained(demo["checkpoint"]).eval()
    processor = tiny_processor()
    videos = demo["clips"] + list(demo["uploads"].values())
    with torch.no_grad():
        inputs = processor(text=[QUERY], videos=videos, return_tensors="pt", return_timestamps=True)
        times = inputs.pop("video_timestamps")
        output = model(**inputs)
        caption_embedding = model.get_text_features(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).global_embeds[0]
        frames = torch.nn.functional.normalize(output.frame_embeds, dim=-1) @ caption_embedding
        best = frames.masked_fill(inputs["video_mask"] == 0, -float("inf")).argmax(dim=1)
        labelled = processor(
            text=[DEFAULT_HYPOTHESIS_TEMPLATE.replace("{}", label) for label in LABELS], videos=videos,
            return_tensors="pt",
        )
        probabilities = model(**labelled).logits_per_video.softmax(dim=-1)
    names = [Path(video).name for video in demo["clips"]] + [f"upload:{name}" for name in demo["uploads"]]
    return {
        "scores": dict(zip(names, output.logits_per_text[0].tolist())),
        "moments": dict(zip(names, times[torch.arange(len(videos)), best].tolist())),
        "probabilities": {name: dict(zip(LABELS, row)) for name, row in zip(names, probabilities.tolist())},
    }


def run_query(page, text: str, mode: str = "Search", expected_selector: str = "#results .hit") -> None:
    page.get_by_role("radio", name=mode).check()
    previous = page.locator("#status").inner_text()
    page.locator("#text textarea, #text input").first.fill(text)
    page.locator("#run").click()
    # The status line names the query and how long it took once the new result is on the page.
    page.wait_for_function(
        "([before, selector]) => { const now = document.querySelector('#status').innerText;"
        " return now !== before && / in \\d+ ms\\./.test(now) && document.querySelector(selector) !== null; }",
        arg=[previous, expected_selector],
    )


def shown_hits(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#results .hit",
        "hits => hits.map(hit => ({name: hit.dataset.name, score: parseFloat(hit.dataset.score),"
        " time: parseFloat(hit.dataset.time), src: hit.dataset.src, picture: hit.querySelector('img')?.src || ''}))",
    )


def test_page_loads_with_the_indexed_gallery(demo, page):
    # Indexed at start-up with a progress indication, then every clip appears as a picture.
    page.wait_for_function(f"document.querySelectorAll('#gallery .tile').length === {len(CLIPS)}")
    tiles = page.eval_on_selector_all(
        "#gallery .tile", "tiles => tiles.map(tile => [tile.dataset.key, tile.querySelector('img')?.src || ''])"
    )
    assert [key for key, _ in tiles] == [f"examples/{Path(clip).name}" for clip in demo["clips"]]
    assert all(picture.startswith("data:image/jpeg;base64,") for _, picture in tiles)
    assert f"{len(CLIPS)} videos searchable" in page.locator("#status").inner_text()
    # The query box and its button sit above the results and the gallery.
    query_box = page.locator("#text").bounding_box()
    assert query_box["y"] < page.locator("#results").bounding_box()["y"] < page.locator("#gallery").bounding_box()["y"]
    assert page.locator("#run").bounding_box()["y"] < 200


def test_query_over_the_collection_finds_the_clip_and_plays_the_moment(demo, page, reference):
    page.wait_for_function(f"document.querySelectorAll('#gallery .tile').length === {len(CLIPS)}")
    run_query(page, QUERY)
    hits = shown_hits(page)
    assert hits[0]["name"] == "000000.mp4", hits  # the red square moving left, not the one moving right
    scores = {name: score for name, score in reference["scores"].items() if not name.startswith("upload:")}
    expected = sorted(scores, key=lambda name: (-scores[name], name))
    assert [hit["name"] for hit in hits] == expected
    assert [hit["score"] for hit in hits] == pytest.approx([scores[name] for name in expected], abs=1e-3)
    assert [hit["time"] for hit in hits] == pytest.approx([reference["moments"][name] for name in expected], abs=1e-3)
    assert all(hit["picture"].startswith("data:image/jpeg;base64,") for hit in hits)
    assert "Best 8 of 8 videos" in page.locator("#status").inner_text()

    # A click plays the video from the moment: pick the hit whose moment is furthest into its clip.
    target = max(range(len(hits)), key=lambda index: hits[index]["time"])
    moment = hits[target]["time"]
    assert moment > 0, hits
    page.locator("#results .hit").nth(target).click()
    # The browser's own record of what it played (`played`: time ranges) says where playback started, however late
    # this test looks on a busy machine; `currentTime` is past the moment and within the clip.
    page.wait_for_function(
        "() => { const v = document.querySelector('#player video');"
        " return v.played.length > 0 && v.played.end(0) > v.played.start(0); }"
    )
    state = page.eval_on_selector(
        "#player video",
        "v => ({first: v.played.start(0), time: v.currentTime, duration: v.duration, src: v.currentSrc,"
        " error: v.error && v.error.code})",
    )
    assert state["error"] is None and f"/{hits[target]['name']}#t=" in state["src"], state
    assert state["first"] == pytest.approx(moment, abs=0.01), (state, moment)
    assert moment - 0.01 <= state["time"] <= state["duration"], (state, moment)
    assert hits[target]["name"] in page.locator("#player .now").inner_text()
    save_screenshot(page, demo["folder"], "demo-search.png")


def test_click_selects_examples_and_classify_draws_charts(demo, page, reference):
    page.wait_for_function(f"document.querySelectorAll('#gallery .tile').length === {len(CLIPS)}")
    picked = ["000000.mp4", "000002.mp4"]
    for name in picked:
        tile = page.locator(f'#gallery .tile[data-key="examples/{name}"]')
        tile.click()
        page.wait_for_function(f"""document.querySelector('#gallery .tile[data-key="examples/{name}"]')"""
                               ".classList.contains('selected')")
        assert tile.get_attribute("aria-pressed") == "true"
    run_query(page, ", ".join(LABELS), mode="Classify", expected_selector="#results .chart")
    charts = page.eval_on_selector_all(
        "#results .chart",
        "charts => charts.map(chart => [chart.dataset.name, [...chart.querySelectorAll('.bar')].map(bar =>"
        " [bar.dataset.label, parseFloat(bar.dataset.probability),"
        " bar.querySelector('.fill').getBoundingClientRect().width])])",
    )
    assert [name for name, _ in charts] == picked
    for name, bars in charts:
        probabilities = [probability for _, probability, _ in bars]
        widths = [width for _, _, width in bars]
        assert probabilities == sorted(probabilities, reverse=True)  # a sorted bar chart
        assert widths == sorted(widths, reverse=True) and widths[0] > 0
        assert {label: p for label, p, _ in bars} == pytest.approx(reference["probabilities"][name], abs=1e-3)
    save_screenshot(page, demo["folder"], "demo-classify.png")

    # "Select all" selects every picture.
    page.locator("#select-all").click()
    page.wait_for_function(f"document.querySelectorAll('#gallery .tile.selected').length === {len(CLIPS)}")
    page.locator("#clear").click()
    page.wait_for_function("document.querySelectorAll('#gallery .tile.selected').length === 0")


def test_uploads_join_the_search_and_bad_ones_are_explained(demo, page, reference):
    page.wait_for_function(f"document.querySelectorAll('#gallery .tile').length === {len(CLIPS)}")
    upload = page.locator("#upload input[type=file], input[type=file]").first
    upload.set_input_files(list(demo["uploads"].values()))
    page.wait_for_function(f"document.querySelectorAll('#gallery .tile').length === {len(CLIPS) + 2}")
    assert f"{len(CLIPS) + 2} videos searchable" in page.locator("#status").inner_text()
    run_query(page, QUERY)
    hits = {hit["name"]: hit for hit in shown_hits(page)}
    for name in demo["uploads"]:  # scored like the indexed clips: the model's logits for the file
        assert hits[name]["score"] == pytest.approx(reference["scores"][f"upload:{name}"], abs=1e-3)
        assert hits[name]["time"] == pytest.approx(reference["moments"][f"upload:{name}"], abs=1e-3)

    upload.set_input_files([str(demo["folder"] / "broken.mp4")])
    page.get_by_text(re.compile(r"Cannot read video .*broken\.mp4")).first.wait_for()
    # An upload over the limit is refused with a message naming the limit.
    upload.set_input_files([str(demo["folder"] / "large.mp4")])
    page.get_by_text(re.compile(r"(exceed|over).*(maximum|limit)", re.IGNORECASE)).first.wait_for()
    assert page.locator("#gallery .tile").count() == len(CLIPS) + 2


def save_screenshot(page, folder: Path, name: str) -> Path:
    """The page as a person sees it, saved under pytest's temporary `folder` and, when `CLIP2VIDEO_TEST_ARTEFACTS`
    names a folder, copied there."""
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("CLIP2VIDEO_TEST_ARTEFACTS"):
        artefacts = Path(os.environ["CLIP2VIDEO_TEST_ARTEFACTS"])
        artefacts.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, artefacts / name)
    return path

"""CLIP2Video demo, in the shape of a Hugging Face Space: type what you are looking for and find the moment in a
collection of videos, then play it; or pick videos by their pictures and classify them with your own labels.

    python apps/demo/app.py                              # outputs/clip2video-synthetic on http://127.0.0.1:7860
    python apps/demo/app.py --model clip2video-msrvtt --examples_dir my_videos --port 8080
    CLIP2VIDEO_MODEL=my-org/clip2video-msrvtt python app.py     # on a Space (set the variable in its settings)

The example folder (`--examples_dir`, by default the synthetic test clips when `training/run.py` wrote them) and
`--videos_dir` are indexed once with the project's video search (`apps.search`) when the demo starts, or the index is
loaded when one built with the same model is there (and brought up to date); the page shows the progress. A query
then scores the whole collection from the stored embeddings, and uploads are embedded and added for the session.

Runs offline with a local checkpoint, on the GPU when there is one (bfloat16 there; `--device`, `--dtype`). Scores
are the model's `logits_per_text` (search; higher is better) or the softmax over the labels of `logits_per_video`
(classify, through the zero-shot pipeline's own caption and ranking functions). Uploads obey the processor's decoding
limits (`CLIP2VIDEO_MAX_INPUT_BYTES` and the other `CLIP2VIDEO_*` variables): a refused file gets a message saying
which file and why.
"""

import argparse
import html
import logging
import math
import os
import time
import urllib.parse
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: the demo must work offline

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModel, AutoProcessor  # noqa: E402

from clip2video.apps.demo.collection import (  # noqa: E402
    MOMENT_SIDE,
    Classified,
    CollectionVideo,
    Hit,
    UploadedVideo,
    VideoCollection,
    default_index_root,
    frame_jpeg,
)
from clip2video.processing.video_decoding_clip2video import DecodeLimits  # noqa: E402


DEFAULT_MODEL = os.environ.get("CLIP2VIDEO_MODEL", "outputs/clip2video-synthetic")
SYNTHETIC_EXAMPLES = "outputs/data/synthetic/test/videos"  # written by training/run.py
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MAX_UPLOADS = 16  # per session
MAX_LABELS = 32
MAX_QUERY_CHARS = 500  # the tokenizer keeps 32 tokens anyway
GALLERY_LIMIT = 240  # thumbnails on the page; the search covers every video
QUERY_PLACEHOLDER = "Describe a moment: a red square moves left, a man is playing the guitar, ..."
LABELS_PLACEHOLDER = "Labels, separated by commas: red, green, blue"


# ----------------------------------------------------------------------------------------------------------------
# HTML (every text from a file name or a person is escaped)
# ----------------------------------------------------------------------------------------------------------------


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def file_url(path: str) -> str:
    """Gradio's route for a file it may serve (an uploaded file, or one under `allowed_paths`), relative to the
    page so that it works behind a Space's proxy."""
    return "gradio_api/file=" + urllib.parse.quote(os.path.abspath(path))


def _picture(video: CollectionVideo, seconds: float | None = None, large: bool = False) -> str:
    uri = frame_jpeg(video.path, seconds, MOMENT_SIDE) if large else frame_jpeg(video.path, seconds)
    if uri is None:
        return '<div class="nopicture">no picture</div>'
    return f'<img src="{uri}" alt="{_e(video.name)}" loading="lazy">'


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "start"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:05.2f}" if minutes else f"{rest:.2f} s"


def hits_html(hits: list[Hit]) -> str:
    cards = []
    for rank, hit in enumerate(hits, 1):
        start = hit.moment_seconds if math.isfinite(hit.moment_seconds) else 0.0
        cards.append(
            f'<button type="button" class="hit" data-src="{_e(file_url(hit.video.path))}" data-time="{start:.3f}" '
            f'data-name="{_e(hit.video.name)}" data-score="{hit.score:.6f}" title="Play {_e(hit.video.name)} from '
            f'{_e(format_seconds(start))}">'
            f'<span class="frame">{_picture(hit.video, hit.moment_seconds, large=True)}'
            f'<span class="rank">{rank}</span><span class="at">&#9654; {_e(format_seconds(hit.moment_seconds))}</span>'
            f'</span><span class="caption"><span class="name">{_e(hit.video.name)}</span>'
            f'<span class="score">score {hit.score:.2f}</span></span></button>'
        )
    return '<div class="hits">' + "".join(cards) + "</div>"


def charts_html(results: list[Classified]) -> str:
    cards = []
    for result in results:
        bars = "".join(
            f'<div class="bar" data-label="{_e(label)}" data-probability="{probability:.6f}">'
            f'<span class="label">{_e(label)}</span><span class="track"><span class="fill" '
            f'style="width:{100 * probability:.2f}%"></span></span>'
            f'<span class="value">{100 * probability:.1f}%</span></div>'
            for label, probability in result.labels
        )
        cards.append(
            f'<div class="chart" data-name="{_e(result.video.name)}">'
            f'<button type="button" class="hit small" data-src="{_e(file_url(result.video.path))}" data-time="0" '
            f'data-name="{_e(result.video.name)}" title="Play {_e(result.video.name)}">'
            f'<span class="frame">{_picture(result.video)}</span></button>'
            f'<div class="bars"><div class="name">{_e(result.video.name)}</div>{bars}</div></div>'
        )
    return '<div class="charts">' + "".join(cards) + "</div>"


def gallery_html(videos: list[CollectionVideo], selected: list[str]) -> str:
    if not videos:
        return '<p class="empty">No videos yet: upload some, or start the demo with --examples_dir.</p>'
    chosen = set(selected)
    tiles = []
    for video in videos[:GALLERY_LIMIT]:
        is_selected = video.key in chosen
        tiles.append(
            f'<button type="button" class="tile{" selected" if is_selected else ""}" data-key="{_e(video.key)}" '
            f'aria-pressed="{str(is_selected).lower()}" title="{_e(video.name)}">'
            f'{_picture(video)}<span class="tick">&#10003;</span><span class="name">{_e(video.name)}</span></button>'
        )
    more = (
        f'<p class="more">Showing {GALLERY_LIMIT} of {len(videos)} videos; search covers all of them.</p>'
        if len(videos) > GALLERY_LIMIT else ""
    )
    return '<div class="tiles">' + "".join(tiles) + "</div>" + more


def progress_html(collection: VideoCollection) -> str:
    parts = []
    for folder in collection.folders:
        if folder.state == "indexing" and folder.total:
            share = folder.done / folder.total
            parts.append(
                f'<div class="progress" role="progressbar" aria-valuemin="0" aria-valuemax="{folder.total}" '
                f'aria-valuenow="{folder.done}"><span style="width:{100 * share:.1f}%"></span></div>'
                f"<span>Indexing {_e(folder.name)}: {folder.done} of {folder.total} videos&hellip;</span>"
            )
        elif folder.state in ("waiting", "indexing"):
            parts.append(f"<span>Opening the index of {_e(folder.name)}&hellip;</span>")
        elif folder.state == "failed":
            parts.append(
                f'<span class="error" role="alert">Could not index {_e(folder.name)}: {_e(folder.message)}</span>'
            )
        elif folder.message:
            parts.append(f'<span class="note">{_e(folder.name)}: {_e(folder.message)}</span>')
    return "".join(f'<div class="line">{part}</div>' for part in parts)


def status_html(collection: VideoCollection, uploads: list[UploadedVideo], message: str = "", error: str = "") -> str:
    lines = progress_html(collection)
    if collection.ready:
        counts = ", ".join(f"{folder.name}: {len(folder.videos)}" for folder in collection.folders if folder.videos)
        total = len(collection) + len(uploads)
        summary = f"{total} video{'s' if total != 1 else ''} searchable"
        if counts or uploads:
            summary += " (" + ", ".join(filter(None, [counts, f"uploads: {len(uploads)}" if uploads else ""])) + ")"
        lines = f'<div class="line ready">{_e(summary)}</div>' + lines
    if message:
        lines += f'<div class="line message">{_e(message)}</div>'
    if error:
        lines += f'<div class="line error" role="alert">{_e(error)}</div>'
    return lines


PLAYER_HTML = (
    '<div class="player"><video controls playsinline preload="metadata"></video>'
    '<div class="now">Click a result to play it from its best moment.</div></div>'
)

# Results: a click on a hit plays its video from the moment (the media fragment and, once the metadata is known,
# currentTime; either alone is not enough in every browser).
RESULTS_JS = """
element.addEventListener('click', (event) => {
  const hit = event.target.closest('[data-src]');
  if (!hit) return;
  const video = document.querySelector('#player video');
  const now = document.querySelector('#player .now');
  const start = parseFloat(hit.dataset.time) || 0;
  element.querySelectorAll('.playing').forEach((other) => other.classList.remove('playing'));
  hit.classList.add('playing');
  now.textContent = `${hit.dataset.name} from ${start.toFixed(2)} s`;
  const begin = () => { video.currentTime = start; video.play().catch(() => {}); };
  if (video.dataset.src === hit.dataset.src && video.readyState >= 1) { begin(); return; }
  video.dataset.src = hit.dataset.src;
  video.addEventListener('loadedmetadata', begin, {once: true});
  video.src = `${hit.dataset.src}#t=${start}`;
  video.load();
});
"""

# Gallery: a click toggles a picture; the page tells the server the selection.
GALLERY_JS = """
element.addEventListener('click', (event) => {
  const tile = event.target.closest('.tile');
  if (!tile) return;
  const selected = tile.classList.toggle('selected');
  tile.setAttribute('aria-pressed', String(selected));
  const keys = [...element.querySelectorAll('.tile.selected')].map((other) => other.dataset.key);
  trigger('select', {keys});
});
"""

CSS = """
#header h1 { margin: 0; font-size: 1.6rem; }
#header p { margin: 0.2rem 0 0; color: var(--body-text-color-subdued); }
#querybar, #gallery-bar { align-items: center; }
#mode .wrap { flex-wrap: nowrap; }
#gallery-title h3 { margin: 0.6rem 0 0; }
#gallery-title p { margin: 0.1rem 0 0; color: var(--body-text-color-subdued); font-size: 0.9rem; }
#status .line { margin: 0.15rem 0; font-size: 0.92rem; }
#status .ready { color: var(--body-text-color-subdued); }
#status .error { color: #b42318; font-weight: 600; }
#status .note { color: var(--body-text-color-subdued); }
#status .progress { display: inline-block; width: 220px; height: 10px; margin-right: 0.6rem; border-radius: 5px;
  background: var(--neutral-200); overflow: hidden; vertical-align: middle; }
#status .progress span { display: block; height: 100%; background: var(--color-accent); transition: width 0.3s; }
.hits { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 0.75rem; }
.hit { all: unset; cursor: pointer; display: flex; flex-direction: column; border-radius: 10px; overflow: hidden;
  background: var(--block-background-fill); border: 1px solid var(--border-color-primary);
  box-shadow: 0 1px 2px rgba(0,0,0,0.06); transition: transform 0.1s, box-shadow 0.1s; }
.hit:hover, .hit:focus-visible { transform: translateY(-2px); box-shadow: 0 4px 12px rgba(0,0,0,0.12); }
.hit.playing { outline: 3px solid var(--color-accent); }
.frame { position: relative; display: block; aspect-ratio: 4 / 3; background: #111; }
.frame img, .tile img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; display: block; }
.frame .rank { position: absolute; top: 6px; left: 6px; background: rgba(0,0,0,0.7); color: #fff;
  border-radius: 999px; min-width: 1.5rem; text-align: center; font-weight: 700; font-size: 0.8rem; padding: 1px 6px; }
.frame .at { position: absolute; bottom: 6px; right: 6px; background: var(--color-accent); color: #fff;
  border-radius: 6px; font-size: 0.78rem; padding: 1px 6px; font-weight: 600; }
.hit .caption { display: flex; flex-direction: column; padding: 0.3rem 0.5rem; font-size: 0.82rem; }
.hit .name { font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.hit .score { color: var(--body-text-color-subdued); white-space: nowrap; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 0.75rem; }
.chart { display: flex; gap: 0.6rem; padding: 0.5rem; border-radius: 10px;
  border: 1px solid var(--border-color-primary); background: var(--block-background-fill); }
.chart .hit.small { width: 96px; flex: none; }
.chart .bars { flex: 1; min-width: 0; }
.chart .name { font-weight: 600; font-size: 0.85rem; margin-bottom: 0.25rem; }
.bar { display: grid; grid-template-columns: minmax(60px, 34%) 1fr 3.2rem; gap: 0.4rem; align-items: center;
  font-size: 0.8rem; margin: 2px 0; }
.bar .label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.bar .track { height: 12px; background: var(--neutral-100); border-radius: 6px; overflow: hidden; }
.bar .fill { display: block; height: 100%; background: var(--color-accent); border-radius: 6px; }
.bar .value { text-align: right; font-variant-numeric: tabular-nums; }
.player video { width: 100%; aspect-ratio: 4 / 3; background: #000; border-radius: 10px; image-rendering: pixelated; }
.player .now { font-size: 0.85rem; color: var(--body-text-color-subdued); margin-top: 0.3rem; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(84px, 1fr)); gap: 0.5rem; }
.tile { all: unset; cursor: pointer; position: relative; border-radius: 8px; overflow: hidden; aspect-ratio: 1;
  background: #111; border: 3px solid transparent; }
.tile:hover, .tile:focus-visible { border-color: var(--neutral-400); }
.tile.selected { border-color: var(--color-accent); }
.tile .tick { display: none; position: absolute; top: 4px; right: 4px; background: var(--color-accent); color: #fff;
  border-radius: 999px; width: 1.2rem; height: 1.2rem; text-align: center; font-size: 0.8rem; line-height: 1.2rem; }
.tile.selected .tick { display: block; }
.tile .name { position: absolute; left: 0; right: 0; bottom: 0; background: rgba(0,0,0,0.55); color: #fff;
  font-size: 0.68rem; padding: 1px 4px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.empty, .more { color: var(--body-text-color-subdued); }
"""


# ----------------------------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------------------------


def oversized_upload(paths: list[str], limits: DecodeLimits) -> str | None:
    """The message for the first upload over `limits.max_input_bytes`, or None."""
    for path in paths:
        size = os.path.getsize(path)
        if size > limits.max_input_bytes:
            return (
                f"{Path(path).name} is {size:,} bytes, over this demo's limit of {limits.max_input_bytes:,} bytes "
                "per video (CLIP2VIDEO_MAX_INPUT_BYTES)."
            )
    return None


def respond(
    collection: VideoCollection, mode: str, text: str, uploads: list[UploadedVideo], selected: list[str], top_k: int
):
    """What the button does: the results' HTML and the status line, or a `gr.Error` with what to do. `mode`:
    "query" (search the whole collection and the uploads) or "labels" (classify the `selected` videos)."""
    started = time.perf_counter()
    text = (text or "").strip() if isinstance(text, str) else ""
    if mode not in ("query", "labels"):
        raise gr.Error(f"Unknown mode {str(mode)[:40]!r}: 'query' or 'labels'.")
    if not collection.ready:
        raise gr.Error("The videos are still being indexed; the bar above shows how far it got.")
    if not text:
        raise gr.Error("Type what you are looking for." if mode == "query" else "Type labels, separated by commas.")
    if len(text) > MAX_QUERY_CHARS:
        raise gr.Error(f"At most {MAX_QUERY_CHARS} characters, got {len(text)}.")
    if mode == "query":
        if not len(collection) and not uploads:
            raise gr.Error("There are no videos to search: upload some.")
        hits = collection.search(text, uploads, top_k)
        body = hits_html(hits)
        message = f"Best {len(hits)} of {len(collection) + len(uploads)} videos for “{text}”"
    else:
        labels = [label.strip() for label in text.split(",") if label.strip()]
        if not 2 <= len(labels) <= MAX_LABELS:
            raise gr.Error(f"Type 2 to {MAX_LABELS} labels, separated by commas.")
        known = {video.key for video in [*uploads, *collection.videos()]}
        keys = [key for key in selected if key in known]
        if not keys:
            raise gr.Error("Select the videos to classify: click their pictures below (or “Select all”).")
        if len(keys) > GALLERY_LIMIT:
            raise gr.Error(f"Classify at most {GALLERY_LIMIT} videos at a time, got {len(keys)}.")
        try:
            results = collection.classify(keys, uploads, labels)
        except ValueError as error:
            raise gr.Error(str(error)) from None
        body = charts_html(results)
        message = f"{len(results)} video{'s' if len(results) != 1 else ''} classified with {len(labels)} labels"
    message += f" in {1000 * (time.perf_counter() - started):.0f} ms."
    return body, status_html(collection, uploads, message)


def build_demo(collection: VideoCollection, limits: DecodeLimits, top_k: int = 12) -> gr.Blocks:
    def all_videos(uploads: list[UploadedVideo]) -> list[CollectionVideo]:
        return list(uploads) + collection.videos()

    def run(mode, text, uploads, selected):
        return respond(collection, mode, text, uploads, selected, top_k)

    def upload(files, uploads, selected):
        paths = [str(path) for path in files or []]
        uploads, selected = list(uploads), list(selected)
        before, errors = len(uploads), []
        if len(uploads) + len(paths) > MAX_UPLOADS:
            errors.append(f"At most {MAX_UPLOADS} uploads per session; {len(paths)} more refused.")
            paths = []
        for path in paths:
            name = Path(path).name
            refused = oversized_upload([path], limits)
            if refused:
                errors.append(refused)
                continue
            key = f"upload/{len(uploads)}/{name}"
            try:
                uploads.append(collection.embed_upload(path, key, name))
            except Exception as error:  # unreadable, over a decoding limit, ...: say which file and why
                errors.append(str(error) if name in str(error) else f"{name}: {error}")
                continue
            selected.append(key)
        for error in errors:
            gr.Warning(error)
        added = len(uploads) - before
        message = f"Added {added} uploaded video{'s' if added != 1 else ''} to the collection." if added else ""
        return (
            uploads, selected, gallery_html(all_videos(uploads), selected),
            status_html(collection, uploads, message, " ".join(errors)),
        )

    def pick(uploads, event: gr.EventData):
        keys = getattr(event, "keys", None)
        known = {video.key for video in all_videos(uploads)}
        return [key for key in keys if isinstance(key, str) and key in known] if isinstance(keys, list) else []

    def select_all(uploads):  # the pictures on the page
        selected = [video.key for video in all_videos(uploads)[:GALLERY_LIMIT]]
        return selected, gallery_html(all_videos(uploads), selected)

    def clear(uploads):
        return [], gallery_html(all_videos(uploads), [])

    def tick(uploads, selected):
        if not collection.ready:
            return status_html(collection, uploads), gr.skip(), gr.Timer(active=True)
        return status_html(collection, uploads), gallery_html(all_videos(uploads), selected), gr.Timer(active=False)

    def switch(mode):
        if mode == "query":
            return gr.update(placeholder=QUERY_PLACEHOLDER), gr.update(value="Search")
        return gr.update(placeholder=LABELS_PLACEHOLDER), gr.update(value="Classify")

    with gr.Blocks(title="CLIP2Video: find the moment in your videos") as demo:
        uploads = gr.State([])
        selected = gr.State([])
        gr.HTML(
            "<h1>CLIP2Video: find the moment in your videos</h1><p>Type what happens; the model scores every video "
            "and shows the moment that matches best. Click a result to play it from there.</p>",
            elem_id="header",
        )
        with gr.Row(elem_id="querybar"):
            mode = gr.Radio(
                [("Search", "query"), ("Classify", "labels")], value="query", show_label=False, scale=0,
                min_width=210, elem_id="mode", container=False,
            )
            text = gr.Textbox(
                show_label=False, placeholder=QUERY_PLACEHOLDER, lines=1, max_lines=1, scale=6,
                elem_id="text", container=False, autofocus=True,
            )
            button = gr.Button("Search", variant="primary", scale=0, min_width=120, elem_id="run")
        status = gr.HTML(status_html(collection, []), elem_id="status", js_on_load=None)
        with gr.Row():
            with gr.Column(scale=3):
                results = gr.HTML(
                    '<p class="empty">Results appear here.</p>', elem_id="results", js_on_load=RESULTS_JS
                )
            with gr.Column(scale=2, min_width=260):
                gr.HTML(PLAYER_HTML, elem_id="player", js_on_load=None)
        with gr.Row(elem_id="gallery-bar"):
            gr.HTML(
                "<h3>Videos</h3><p>Click pictures to select them for Classify; search always covers every video.</p>",
                elem_id="gallery-title",
            )
            select_all_button = gr.Button("Select all", size="sm", scale=0, min_width=100, elem_id="select-all")
            clear_button = gr.Button("Clear", size="sm", scale=0, min_width=80, elem_id="clear")
            upload_button = gr.UploadButton(
                "Upload videos", file_count="multiple", file_types=["video"], size="sm", scale=0, min_width=140,
                elem_id="upload",
            )
        gallery = gr.HTML(gallery_html([], []), elem_id="gallery", js_on_load=GALLERY_JS)
        timer = gr.Timer(0.5)

        mode.change(switch, inputs=mode, outputs=[text, button])
        for trigger in (button.click, text.submit):
            trigger(run, inputs=[mode, text, uploads, selected], outputs=[results, status])
        upload_button.upload(
            upload, inputs=[upload_button, uploads, selected], outputs=[uploads, selected, gallery, status]
        )
        gallery.select(pick, inputs=uploads, outputs=selected, queue=False)
        select_all_button.click(select_all, inputs=uploads, outputs=[selected, gallery])
        clear_button.click(clear, inputs=uploads, outputs=[selected, gallery])
        timer.tick(tick, inputs=[uploads, selected], outputs=[status, gallery, timer])
    return demo


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint folder or Hub id (env CLIP2VIDEO_MODEL)")
    parser.add_argument(
        "--examples_dir", default=os.environ.get("CLIP2VIDEO_EXAMPLES"),
        help=f"example videos, indexed at start (env CLIP2VIDEO_EXAMPLES; default {SYNTHETIC_EXAMPLES} if present)",
    )
    parser.add_argument(
        "--videos_dir", default=os.environ.get("CLIP2VIDEO_VIDEOS"),
        help="another folder of videos to index and search (env CLIP2VIDEO_VIDEOS)",
    )
    parser.add_argument(
        "--index_root", default=os.environ.get("CLIP2VIDEO_DEMO_INDEXES"),
        help=f"where the folders' indexes are kept (env CLIP2VIDEO_DEMO_INDEXES; default {default_index_root()})",
    )
    parser.add_argument("--top_k", type=int, default=12, help="hits shown per query (default 12)")
    parser.add_argument(
        "--query_threads", type=int, default=1, help="torch threads per query on CPU (default 1; see docs/demo.md)"
    )
    parser.add_argument("--batch_size", type=int, default=8, help="videos per forward pass when indexing")
    parser.add_argument(
        "--num_workers", type=int, default=0, help="decoding worker processes when indexing (default 0: in-process)"
    )
    parser.add_argument(
        "--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="address to serve on (a Space sets 0.0.0.0)",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bfloat16 on cuda, else float32")
    args = parser.parse_args(argv)
    for name in ("top_k", "batch_size", "query_threads"):
        if not 1 <= getattr(args, name) <= 1000:
            parser.error(f"--{name} must be between 1 and 1000.")
    if args.num_workers < 0:
        parser.error("--num_workers must be at least 0.")
    if args.examples_dir is None and Path(SYNTHETIC_EXAMPLES).is_dir():
        args.examples_dir = SYNTHETIC_EXAMPLES
    for name in ("examples_dir", "videos_dir"):
        folder = getattr(args, name)
        if folder and not Path(folder).is_dir():
            parser.error(f"--{name} {folder} is not a folder.")
    return args


def load_model(name: str, device: str | None, dtype: str | None):
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[dtype or ("bfloat16" if device.type == "cuda" else "float32")]
    model = AutoModel.from_pretrained(name, trust_remote_code=True, dtype=dtype).to(device).eval()
    return model, AutoProcessor.from_pretrained(name, trust_remote_code=True)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        model, processor = load_model(args.model, args.device, args.dtype)
    except OSError as error:
        raise SystemExit(
            f"Cannot load the model {args.model!r} ({error}). Train the default one with `python training/run.py` "
            "(it writes outputs/clip2video-synthetic), or pass --model / set CLIP2VIDEO_MODEL."
        ) from None
    folders = {}
    if args.examples_dir:
        folders["examples"] = args.examples_dir
    same_folder = args.examples_dir and Path(args.videos_dir or ".").resolve() == Path(args.examples_dir).resolve()
    if args.videos_dir and not same_folder:
        folders["videos"] = args.videos_dir
    collection = VideoCollection(
        model, processor, folders, Path(args.index_root) if args.index_root else default_index_root(),
        batch_size=args.batch_size, num_workers=args.num_workers, pictures=GALLERY_LIMIT,
        query_threads=args.query_threads,
    )
    collection.start()  # the page is served meanwhile and shows the progress
    limits = DecodeLimits.from_env()
    demo = build_demo(collection, limits, top_k=args.top_k)
    # System fonts: the default theme would fetch Google Fonts, which an offline machine cannot.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    # Gradio refuses larger uploads itself; `upload` says which file and which limit for the ones it lets through.
    demo.launch(
        server_name=args.host, server_port=args.port, theme=theme, css=CSS, show_error=True,
        max_file_size=limits.max_input_bytes,
        allowed_paths=[str(Path(folder).resolve()) for folder in folders.values()],  # the videos the player plays
    )


if __name__ == "__main__":
    main()

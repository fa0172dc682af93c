"""The demo's video collection: folders indexed once with the project's video search (`apps.search`; built at
start-up, or loaded and brought up to date when present), the session's uploads embedded the same way, and frames
read back from the files for the pictures on the page.

Every score is the model's `logits_per_text` (`logit_scale.exp() * text . video` over the `pooler_output`
embeddings, what `VideoIndex.search` returns); labels are ranked by the zero-shot pipeline's own functions over the
same embeddings, so a query never decodes a video again.
"""

import base64
import contextlib
import hashlib
import io
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from clip2video.apps.search.indexer import IndexingOptions, VideoIndexer, embed_videos
from clip2video.apps.search.video_index import VideoIndex, best_moment, exact_top_k, unit_moment_embeddings
from clip2video.processing.video_processing_clip2video import stack_videos
from clip2video.pipelines.pipeline_clip2video import (
    DEFAULT_HYPOTHESIS_TEMPLATE,
    check_hypothesis_template,
    check_labels,
    hypothesis_captions,
    rank_labels,
)


logger = logging.getLogger(__name__)

# Longest side in pixels of the pictures on the page (larger frames are shrunk): the gallery's are small and many,
# a hit's moment is shown larger.
PICTURE_SIDE = 160
MOMENT_SIDE = 320
MAX_DECODED_FRAMES = 2_000  # frames decoded at most to find one moment (a bound on hostile files)


# ----------------------------------------------------------------------------------------------------------------
# Frames for the page
# ----------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _frame_jpeg(path: str, mtime_ns: int, seconds: float | None, side: int) -> str | None:
    import av
    from PIL import Image

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            if seconds is None:  # the middle of the video
                if stream.duration and stream.time_base:
                    seconds = float(stream.duration * stream.time_base) / 2
                else:
                    seconds = (container.duration or 0) / 2e6
            if seconds > 0 and stream.time_base:
                container.seek(int(seconds / stream.time_base), stream=stream, backward=True)
            chosen = None
            for count, frame in enumerate(container.decode(stream)):
                chosen = frame
                if frame.time is None or frame.time >= seconds - 1e-3 or count >= MAX_DECODED_FRAMES:
                    break
            if chosen is None:
                return None
            image = chosen.to_image()
    except Exception as error:  # a picture is decoration: a file PyAV cannot read shows none, the rest works
        logger.warning("No frame of %s at %s s: %s", path, seconds, error)
        return None
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def frame_jpeg(path: str | Path, seconds: float | None = None, side: int = PICTURE_SIDE) -> str | None:
    """The frame of `path` shown at `seconds` (the middle of the video when None) as a JPEG `data:` URI, at most
    `side` pixels on a side; None when it cannot be read. Cached per file version, time and size."""
    try:
        mtime_ns = os.stat(path).st_mtime_ns
    except OSError:
        return None
    if seconds is not None and not math.isfinite(seconds):
        seconds = None
    return _frame_jpeg(str(path), mtime_ns, None if seconds is None else round(float(seconds), 3), side)


# ----------------------------------------------------------------------------------------------------------------
# What the page shows
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class CollectionVideo:
    """One video of the collection. `key`: unique in the demo (`<folder name>/<path in the folder>`, or
    `upload/<n>/<file name>`); `name`: what the page calls it; `path`: the file."""

    key: str
    name: str
    path: str


@dataclass
class UploadedVideo(CollectionVideo):
    """A video a person uploaded, embedded as the indexer embeds (`embed_videos`). `embedding`: `[embedding_dim]`
    retrieval embedding; `frames`: `[frames, projection_dim]` normalised frame embeddings; `times`: `[frames]` s."""

    embedding: np.ndarray = field(default=None, repr=False)
    frames: np.ndarray = field(default=None, repr=False)
    times: np.ndarray = field(default=None, repr=False)


@dataclass
class Hit:
    video: CollectionVideo
    score: float  # logits_per_text
    moment_seconds: float  # the sampled frame closest to the query (NaN if unknown)


@dataclass
class Classified:
    video: CollectionVideo
    labels: list[tuple[str, float]]  # (label, probability), best first


@dataclass
class FolderState:
    """Where the indexing of one folder stands, for the progress bar."""

    name: str
    root: Path
    index_dir: Path
    state: str = "waiting"  # waiting, indexing, ready, failed
    done: int = 0
    total: int = 0
    message: str = ""
    index: VideoIndex | None = None
    videos: list[CollectionVideo] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------
# The collection
# ----------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's CPU threads set to `count` for the block (torch keeps the setting per thread of the process: the
    indexing thread and the threads answering queries each set their own), restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def default_index_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "clip2video" / "demo-indexes"


class VideoCollection:
    """The folders' videos (indexed with `apps.search`) and a model to search them with.

    Args:
        model, processor: a CLIP2Video checkpoint's, in eval mode.
        folders (`dict[str, str]`): name shown on the page -> folder of videos (searched recursively).
        index_root (`Path`): each folder's index lives in `index_root/<name>-<hash of the folder's path>`.
        batch_size, num_workers: of the indexing (`apps.search.index_videos`'s `--batch_size`, `--num_workers`).
        pictures: how many videos of each folder get their gallery picture read when the folder is ready.
        query_threads: torch threads of a query on CPU (on a busy 2-core machine one thread answered 4.6 to 4.8
            times faster than two, docs/demo.md).
        index_threads: torch threads of the indexing on CPU (default: every CPU this process may use).
    """

    def __init__(
        self,
        model,
        processor,
        folders: dict[str, str],
        index_root: Path,
        batch_size: int = 8,
        num_workers: int = 0,
        pictures: int = 240,
        query_threads: int = 1,
        index_threads: int | None = None,
    ):
        self.model, self.processor = model, processor
        self.query_threads = query_threads
        self.index_threads = index_threads or len(os.sched_getaffinity(0))
        # rebuild: an index of another model, or a damaged one, is this demo's own cache: index again. An unchanged
        # folder's index is opened as it is (a start-up rewrites nothing).
        self.indexing = IndexingOptions(
            batch_size=batch_size, num_workers=num_workers, rebuild=True, wait_for_lock=True, keep_unchanged=True
        )
        self.pictures = pictures
        self.logit_scale = float(model.logit_scale.detach().exp())
        self.folders: list[FolderState] = []
        for name, folder in folders.items():
            root = Path(folder).resolve()
            digest = hashlib.blake2b(str(root).encode(), digest_size=6).hexdigest()
            self.folders.append(FolderState(name, root, Path(index_root) / f"{name}-{digest}"))
        self._thread = None

    # -- indexing -----------------------------------------------------------------------------------------------

    def start(self) -> threading.Thread:
        """Indexes (or loads) every folder in a background thread; `folders` (`FolderState`s) say how far it got."""
        self._thread = threading.Thread(target=self.index_all, name="clip2video-indexing", daemon=True)
        self._thread.start()
        return self._thread

    def index_all(self) -> None:
        with torch_threads(self.index_threads):
            for folder in self.folders:
                try:
                    self._index_folder(folder)
                except BaseException as error:  # SystemExit too: the indexer's refusals are messages for the page
                    logger.exception("Indexing %s failed", folder.root)
                    folder.state, folder.message = "failed", str(error) or type(error).__name__

    def _index_folder(self, folder: FolderState) -> None:
        folder.state = "indexing"

        def on_progress(done: int, total: int) -> None:
            folder.done, folder.total = done, total

        # The index folder is refused if it is or lies in the videos folder, or holds files not its own.
        indexer = VideoIndexer(self.model, self.processor, self.indexing, on_progress=on_progress)
        result = indexer.index(folder.root, folder.index_dir)
        if result.pending:
            logger.info("Indexed %d of the %d videos under %s", result.pending, result.listed, folder.root)
        index = VideoIndex(folder.index_dir)
        if index.metadata["model"]["hash"] != indexer.spec(folder.root).model["hash"]:
            # Never score with another model's embeddings.
            raise RuntimeError(f"{folder.index_dir} now holds another model's index (replaced by another process).")
        folder.videos = [
            CollectionVideo(f"{folder.name}/{path}", path, str(folder.root / path)) for path in index.paths
        ]
        for video in folder.videos[: self.pictures]:  # the gallery's pictures, read once
            frame_jpeg(video.path)
        names = sorted(result.unreadable)
        skipped = (
            f"{len(names)} unreadable file(s) skipped: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"
            if names else ""
        )
        quarantined = result.quarantined
        damaged = f"{len(quarantined)} damaged part(s) of the index set aside and indexed again" if quarantined else ""
        # An approximate index says so on the page, with the recall@10 measured when it was built.
        search = index.describe_search() if index.index_type != "exact" else ""
        folder.message = "; ".join(filter(None, [search, result.note, damaged, skipped]))
        folder.index, folder.state = index, "ready"

    @property
    def ready(self) -> bool:
        return all(folder.state in ("ready", "failed") for folder in self.folders)

    def videos(self) -> list[CollectionVideo]:
        """Every indexed video, folder by folder, in path order."""
        return [video for folder in self.folders for video in folder.videos]

    def __len__(self) -> int:
        return sum(len(folder.videos) for folder in self.folders)

    # -- the model --------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """`pooler_output` `[texts, embedding_dim]` (retrieval) and `global_embeds` `[texts, projection_dim]`
        (the best moment), as float32."""
        inputs = self.processor(text=texts, return_tensors="pt")
        with torch_threads(self.query_threads):
            output = self.model.get_text_features(
                input_ids=inputs["input_ids"].to(self.model.device),
                attention_mask=inputs["attention_mask"].to(self.model.device),
            )
        return output.pooler_output.float().cpu().numpy(), output.global_embeds.float().cpu().numpy()

    def embed_upload(self, path: str, key: str, name: str) -> UploadedVideo:
        """Decodes and embeds one uploaded video as the indexer would. Raises what the processor raises for a file
        it cannot read or one over the decoding limits (the message names the file)."""
        inputs = self.processor(videos=[path], return_tensors="pt", return_timestamps=True)
        [(embedding, frames, times)] = embed_videos(self.model, stack_videos([{key: inputs[key] for key in inputs}]))
        video = UploadedVideo(key, name, path, embedding, frames, times)
        frame_jpeg(path)
        return video

    # -- search -----------------------------------------------------------------------------------------------

    def search(self, query: str, uploads: list[UploadedVideo], top_k: int) -> list[Hit]:
        """The `top_k` videos of the collection and the uploads for `query`, best first (ties by key)."""
        [text], [moment] = self.embed_texts([query])
        hits = []
        for folder in self.folders:
            if folder.index is None or not len(folder.index):
                continue
            by_path = {video.name: video for video in folder.videos}
            for hit in folder.index.search(text, top_k, moment_embeddings=moment):
                hits.append(Hit(by_path[hit.path], hit.score, hit.moment_seconds))
        if uploads:
            # Scored and their moments found as the index's exact search does (`exact_top_k`, `best_moment`).
            inner, rows = exact_top_k(np.stack([video.embedding for video in uploads]), text[None], len(uploads))
            [moment] = unit_moment_embeddings(moment, 1, len(moment))
            for score, row in zip(self.logit_scale * inner[0], rows[0]):
                video = uploads[int(row)]
                hits.append(Hit(video, float(score), best_moment(video.frames, video.times, moment)[0]))
        hits.sort(key=lambda hit: (-hit.score, hit.video.key))
        return hits[:top_k]

    def classify(
        self, keys: list[str], uploads: list[UploadedVideo], labels, template: str = DEFAULT_HYPOTHESIS_TEMPLATE
    ) -> list[Classified]:
        """Label probabilities of each video named in `keys` (in that order), best first: the softmax over the
        labels of `logits_per_video`, ranked by the zero-shot pipeline's `rank_labels`."""
        labels = check_labels(labels)
        texts, _ = self.embed_texts(hypothesis_captions(labels, check_hypothesis_template(template)))
        embeddings = self._embeddings(keys, uploads)
        results = []
        for key in keys:
            video, embedding = embeddings[key]
            logits = torch.from_numpy(self.logit_scale * (texts @ embedding))
            results.append(Classified(video, [(item["label"], item["score"]) for item in rank_labels(logits, labels)]))
        return results

    def _embeddings(
        self, keys: list[str], uploads: list[UploadedVideo]
    ) -> dict[str, tuple[CollectionVideo, np.ndarray]]:
        wanted, found = set(keys), {}
        for video in uploads:
            if video.key in wanted:
                found[video.key] = (video, video.embedding)
        for folder in self.folders:
            if folder.index is None:
                continue
            for row, video in enumerate(folder.videos):
                if video.key in wanted:
                    found[video.key] = (video, np.asarray(folder.index.embeddings[row], np.float32))
        missing = wanted - set(found)
        if missing:
            raise ValueError(f"Unknown video(s): {', '.join(sorted(missing))}.")
        return found


def wait_until_ready(collection: VideoCollection, timeout: float) -> None:
    """Blocks until every folder is indexed or failed (for scripts and benchmarks)."""
    deadline = time.monotonic() + timeout
    while not collection.ready:
        if time.monotonic() > deadline:
            raise TimeoutError(f"indexing did not finish in {timeout} s")
        time.sleep(0.1)

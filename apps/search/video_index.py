"""A searchable video collection on disk, and the search over it.

An index folder holds one *generation* of files, all named after the generation, plus `index.json`, which names the
current generation and is the only file ever replaced in place:

    index.json                        metadata: model fingerprint, widths, logit scale, vector index, file sizes
    videos-<gen>.arrow                one row per video: path (relative), size, mtime_ns, frame_start, frame_count
    embeddings-<gen>.npy              (videos, embedding_dim) retrieval embeddings, float16 or float32, memory-mapped
    frames-<gen>.npy                  (frames, projection_dim) L2-normalised frame embeddings, float16, memory-mapped
    frame_times-<gen>.npy             (frames,) seconds of each sampled frame, float64
    vectors-<gen>.faiss               the approximate FAISS index over the embeddings (absent for `exact`)

A new generation is written under temporary names, renamed, and only then does `index.json` point to it (atomic
`os.replace`); the files of the old generation are removed last. A crash at any point leaves an index that loads.

The score of a video for a text is the model's own `logits_per_text`: `logit_scale.exp() * text @ video`, with the
`pooler_output` embeddings of `get_text_features` / `get_video_features`. The `exact` index scans every stored
embedding; the approximate ones (FAISS IVF or HNSW over 8-bit scalar-quantised vectors) only propose `candidates`
videos, which are then re-scored exactly from the stored embeddings: returned scores are the model's and the order
among returned hits is exact. Only the candidates' recall is approximate (measured in `benchmarks/benchmark_search.py`).

The best-matching moment of a hit is its sampled frame whose CLIP embedding is closest to the caption's global
embedding (`get_text_features(...).global_embeds`).
"""

import errno
import hashlib
import json
import math
import os
import stat
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa


METADATA_FILE = "index.json"
FORMAT_VERSION = 2
INDEX_TYPES = ("auto", "exact", "ivf", "pq", "hnsw")
# Below this many videos `auto` scans exactly (10^5 x 1024 float32: ~20 ms a query); above it, IVF.
APPROXIMATE_ABOVE = 100_000
# Largest tolerated error of a re-ranked cosine similarity from float16 storage (scores err by at most this times
# logit_scale, i.e. 1e-3 of the largest possible score); measured per index as max ||v - float16(v)||.
FLOAT16_TOLERANCE = 1e-3
DEFAULT_CANDIDATES = 256
# Times `VideoIndex` opens a newer generation when the one index.json named was replaced while it was being opened.
OPEN_ATTEMPTS = 10
# index.json is a few kilobytes: anything far larger is not one (and is not read into memory).
MAX_METADATA_BYTES = 64 << 20
# `logit_scale.exp()` recorded by the indexer: CLIP caps it at 100; far above, float32 scores would overflow.
MAX_LOGIT_SCALE = 1e6
_SCAN_ROWS = 65_536  # rows per chunk of an exact scan (top-k selection): bounded memory at any index size
_QUERY_BLOCK = 256  # queries scored together by an exact scan
_PIECE_ROWS = 2048  # rows widened from float16 at a time: 8 MB of float32, within the CPU cache
# Unit float16 rows: candidates are selected by a float16 product (`_selected_top_k`) for this many queries at a time
# (measured at load 14: 1.1-2.7 s per query per 10^6 alone or batched, the float32 scan 2.0-6.3 s), this many per
# query beyond k, then re-scored in float32.
_SELECT_QUERIES = 64
_SELECT_MARGIN = 256
TABLE_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("frame_start", pa.int64()),
        ("frame_count", pa.int32()),
    ]
)


class IndexDamagedError(RuntimeError):
    """A file of the index cannot be used; the message names it and says how to rebuild."""


class ModelMismatchError(ValueError):
    """The model given is not the one the index was built with."""


def list_videos(folder: Path) -> list[Path]:
    """Every file under `folder` (recursively) with a video extension, sorted, hidden files and folders left out."""
    # Imported here: reading an index (and committing one) needs neither torch nor transformers.
    from clip2video.processing.media_types_clip2video import VIDEO_EXTENSIONS

    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in VIDEO_EXTENSIONS
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def repair_command(index_dir: Path, metadata: dict | None = None) -> str:
    model = (metadata or {}).get("model", {}).get("name") if isinstance((metadata or {}).get("model"), dict) else None
    videos = (metadata or {}).get("video_root")
    return (
        f"python -m clip2video.apps.search.index_videos --model {model or '<checkpoint>'} "
        f"--videos {videos or '<videos folder>'} --index_dir {index_dir} --rebuild"
    )


def damaged(path: Path, reason: str, index_dir: Path, metadata: dict | None = None) -> IndexDamagedError:
    return IndexDamagedError(
        f"{path} is damaged ({reason}). The videos are intact; rebuild the index from its parts and videos with:\n"
        f"    {repair_command(index_dir, metadata)}"
    )


# ----------------------------------------------------------------------------------------------------------------
# Model fingerprint
# ----------------------------------------------------------------------------------------------------------------


_FINGERPRINTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def cached_model_fingerprint(model) -> dict[str, Any]:
    """`model_fingerprint`, computed once per model object while its tensors stay the same (same storage, no
    in-place change): hashing every weight takes about a second for the paper's model, too long for each query."""
    state = tuple((t.data_ptr(), t._version) for t in model.state_dict().values())
    cached = _FINGERPRINTS.get(model)
    if cached is None or cached[0] != state:
        cached = (state, model_fingerprint(model))
        _FINGERPRINTS[model] = cached
    return cached[1]


def model_fingerprint(model) -> dict[str, Any]:
    """Name, embedding width and a hash of the config and of every weight (as float32) of a CLIP2Video model: two
    models with the same width but other weights give other embeddings, which an index must not mix."""
    import torch

    config = model.config.to_dict()
    for volatile in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "_attn_implementation"):
        config.pop(volatile, None)
    digest = hashlib.blake2b(json.dumps(config, sort_keys=True, default=str).encode(), digest_size=16)
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return {
        "name": str(getattr(model, "name_or_path", "") or model.config.name_or_path or type(model).__name__),
        "hash": digest.hexdigest(),
    }


# ----------------------------------------------------------------------------------------------------------------
# Search results
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SearchHit:
    """One video found for a query.

    Attributes:
        path (`str`): the video, relative to the indexed folder (`VideoIndex.video_root`).
        score (`float`): the model's `logits_per_text` for the query and this video.
        moment_seconds (`float`): time of the sampled frame that matches the query best (NaN if unknown).
        moment_similarity (`float`): cosine similarity of that frame's CLIP embedding and the query's (NaN without
            `moment_embeddings`).
    """

    path: str
    score: float
    moment_seconds: float
    moment_similarity: float


@dataclass
class SearchParameters:
    """How a query is answered. `exact`: scan every embedding (None: the index's own type decides).
    `candidates`: videos the approximate index proposes for exact re-scoring (at least `k`). `nprobe`: IVF lists
    visited. `ef_search`: HNSW search breadth. `filter`: a Milvus boolean expression over the stored fields (the
    Milvus store only)."""

    exact: bool | None = None
    candidates: int = DEFAULT_CANDIDATES
    nprobe: int | None = None
    ef_search: int | None = None
    filter: str | None = None


def exact_top_k(
    embeddings: np.ndarray, queries: np.ndarray, k: int, unit_rows: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Exact maximum inner product search over `embeddings` (rows, dim; a memory map is read in chunks, float16 is
    computed in float32): inner products and row indices `[queries, min(k, rows)]`, best first, ties by lower row.

    At memory speed (`_Scan`): float16 rows are widened to float32 in cache-sized pieces by torch's vectorised
    conversion (~3x numpy's) and scored by one BLAS product per piece; the k best of each `_SCAN_ROWS` chunk are
    selected with `argpartition`. Batched queries (up to `_QUERY_BLOCK`) share one read of the stored vectors.
    With `unit_rows` (every row's norm is at most 1.01, as in a video index), float16 rows are searched by
    `_selected_top_k` instead, `_SELECT_QUERIES` queries at a time: the same result from one float16 read per block
    of queries and no widening."""
    queries = np.ascontiguousarray(queries, np.float32)
    if unit_rows and embeddings.dtype == np.float16 and len(queries) > _SELECT_QUERIES:
        blocks = [
            exact_top_k(embeddings, queries[i : i + _SELECT_QUERIES], k, unit_rows=True)
            for i in range(0, len(queries), _SELECT_QUERIES)
        ]
        return np.concatenate([s for s, _ in blocks]), np.concatenate([r for _, r in blocks])
    if unit_rows and embeddings.dtype == np.float16 and len(queries):
        selected = _selected_top_k(embeddings, queries, k)
        if selected is not None:
            return selected
    if len(queries) > _QUERY_BLOCK:  # bounded score matrix: (_QUERY_BLOCK, _SCAN_ROWS) float32
        blocks = [exact_top_k(embeddings, queries[i : i + _QUERY_BLOCK], k) for i in range(0, len(queries), _QUERY_BLOCK)]
        return np.concatenate([s for s, _ in blocks]), np.concatenate([r for _, r in blocks])
    k = min(k, len(embeddings))
    best_scores = np.full((len(queries), 0), -np.inf, np.float32)
    best_rows = np.zeros((len(queries), 0), np.int64)
    scan = _Scan(embeddings, queries)
    for start in range(0, len(embeddings), _SCAN_ROWS):
        stop = min(start + _SCAN_ROWS, len(embeddings))
        chunk_rows = np.broadcast_to(np.arange(start, stop), (len(queries), stop - start))
        scores = np.concatenate([best_scores, scan.scores(start, stop)], axis=1)
        rows = np.concatenate([best_rows, chunk_rows], axis=1)
        best_scores, best_rows = _best_k(scores, rows, k)
    return _sorted(best_scores, best_rows)


def _selected_top_k(embeddings: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """`exact_top_k` of unit float16 rows, or None where it cannot be proven (the caller then scans in float32).

    torch's float16 product of the rows with the unit queries (rounded to float16) selects `k + _SELECT_MARGIN`
    candidates per query; they are re-scored in float32 from the stored rows and the k best returned, best first,
    ties by lower row: the scores are those of the float32 scan. A row left out scored at most `last` in float16;
    its float32 score is within `bound` of that (the query's and the product's float16 roundings, 2^-11 each, and a
    float32 sum over `dim` terms, for rows of norm <= 1.01), so the result is exact when `last + bound` is below the
    k-th re-scored score. Where it is not (near-ties at the k-th place), or where a candidate's float16 score strays
    beyond the bound (a product that does not sum in float32), None."""
    import torch

    num_rows, dim = embeddings.shape
    k = min(k, num_rows)
    keep = k + _SELECT_MARGIN
    if num_rows <= keep or k == 0:
        return None
    norms = np.linalg.norm(queries, axis=1)
    if not (np.isfinite(norms).all() and (norms > 0).all()):
        return None
    unit = torch.from_numpy(queries / norms[:, None]).half()
    best_scores = torch.empty((len(queries), 0), dtype=torch.float32)
    best_rows = torch.empty((len(queries), 0), dtype=torch.int64)
    for start in range(0, num_rows, _SCAN_ROWS):
        stop = min(start + _SCAN_ROWS, num_rows)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a read-only memory map: torch only reads it
            stored = torch.from_numpy(np.asarray(embeddings[start:stop]))
        scores = torch.cat([best_scores, (unit @ stored.T).float()], dim=1)
        rows = torch.cat([best_rows, torch.arange(start, stop).expand(len(queries), -1)], dim=1)
        top = torch.topk(scores, min(keep, scores.shape[1]), dim=1)
        best_scores, best_rows = top.values, torch.gather(rows, 1, top.indices)
    approximate = best_scores.numpy().astype(np.float64) * norms[:, None]
    bound = 1.01 * norms * (2 * 2.0**-11 + 2 * dim * 2.0**-24)
    result_scores = np.empty((len(queries), k), np.float32)
    result_rows = np.empty((len(queries), k), np.int64)
    for line, candidates in enumerate(best_rows.numpy()):
        order = np.argsort(candidates)  # sorted rows: sequential reads of the memory map
        stored = np.asarray(embeddings[candidates[order]], np.float32)
        exact = stored @ queries[line]
        if not (np.abs(exact - approximate[line][order]) <= bound[line]).all():
            return None
        scores, rows = _sorted(exact[None], candidates[order][None])
        if not approximate[line].min() + bound[line] < scores[0, k - 1]:
            return None
        result_scores[line], result_rows[line] = scores[0, :k], rows[0, :k]
    return result_scores, result_rows


def _best_k(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (score, row) of each line, unordered; among scores tied at the k-th place, the lowest rows."""
    if scores.shape[1] <= k:
        return scores, rows
    chosen = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores, top_rows = np.take_along_axis(scores, chosen, 1), np.take_along_axis(rows, chosen, 1)
    kth = top_scores.min(axis=1, keepdims=True)
    # argpartition picks arbitrarily among ties at the k-th score: those lines are settled by sorting.
    for line in np.flatnonzero((scores >= kth).sum(axis=1) > k):
        kept = scores[line] >= kth[line]
        line_scores, line_rows = _sorted(scores[line][kept][None], rows[line][kept][None])
        top_scores[line], top_rows[line] = line_scores[0, :k], line_rows[0, :k]
    return top_scores, top_rows


class _Scan:
    """Inner products of queries with stored rows, computed in float32 with torch. float16 rows are widened in pieces
    of `_PIECE_ROWS` into one reused buffer that stays in the CPU cache, so the stored bytes are read once and the
    product reads the widened piece from cache: the scan runs at the speed of reading float16 from memory."""

    def __init__(self, embeddings: np.ndarray, queries: np.ndarray):
        import torch

        self.torch = torch
        self.embeddings = embeddings
        self.queries = torch.from_numpy(queries)
        self.widen = embeddings.dtype == np.float16
        self.buffer = torch.empty((_PIECE_ROWS, embeddings.shape[1]), dtype=torch.float32) if self.widen else None

    def scores(self, start: int, stop: int) -> np.ndarray:
        torch = self.torch
        scores = torch.empty((len(self.queries), stop - start), dtype=torch.float32)
        for piece in range(start, stop, _PIECE_ROWS):
            end = min(piece + _PIECE_ROWS, stop)
            stored = np.asarray(self.embeddings[piece:end])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a read-only memory map: torch only reads it
                stored = torch.from_numpy(stored)
            if self.widen:
                stored = self.buffer[: end - piece].copy_(stored)
            elif stored.dtype != torch.float32:
                stored = stored.float()
            scores[:, piece - start : end - start] = self.queries @ stored.T
        return scores.numpy()


def _sorted(scores: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((rows, -scores), axis=1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


def unit_moment_embeddings(moment_embeddings, texts: int, projection_dim: int) -> np.ndarray | None:
    """`moment_embeddings` (`get_text_features(...).global_embeds`, one per text) as float32 unit vectors, checked
    against the number of texts and the width of the stored frames; None stays None (no moments asked)."""
    if moment_embeddings is None:
        return None
    moment_embeddings = np.atleast_2d(np.asarray(moment_embeddings, np.float32))
    if moment_embeddings.shape != (texts, projection_dim):
        raise ValueError(
            f"moment_embeddings must have shape {(texts, projection_dim)} "
            f"(get_text_features(...).global_embeds), got {moment_embeddings.shape}."
        )
    norms = np.linalg.norm(moment_embeddings, axis=1, keepdims=True)
    return moment_embeddings / np.maximum(norms, 1e-12)


def best_moment(frames: np.ndarray, times: np.ndarray, moment: np.ndarray) -> tuple[float, float]:
    """(seconds, cosine similarity) of the sampled frame of one video that matches a text best: `frames`
    `[frames, projection_dim]` normalised frame embeddings, `times` `[frames]` seconds, `moment` the text's unit
    `global_embeds`. (NaN, NaN) for a video without frames."""
    if len(frames) == 0:
        return math.nan, math.nan
    similarities = np.asarray(frames, np.float32) @ moment
    best = int(np.argmax(similarities))
    return float(times[best]), float(similarities[best])


# ----------------------------------------------------------------------------------------------------------------
# The index
# ----------------------------------------------------------------------------------------------------------------


def retrieval_embedding_dim(config) -> int:
    """The width of the model's retrieval embedding (`CLIP2VideoConfig.retrieval_embedding_dim`). A checkpoint saved
    before the configuration had that property carries its own configuration code without it (remote code is the
    checkpoint's), so its fields give the same width there."""
    width = getattr(config, "retrieval_embedding_dim", None)
    if width is None:
        width = config.projection_dim * (2 if config.use_temporal_alignment_block else 1)
    return int(width)


class VideoIndex:
    """A folder written by `apps.search.index_videos`, opened for search. Embeddings and frames stay on disk
    (memory-mapped); only the FAISS index (8 bits per dimension) and the table are read into memory.

    Args:
        index_dir: the index folder.
        verify: also check every file against the checksum recorded when it was written (reads them all).
        load_vectors: read the FAISS index (the indexer, which rebuilds it, does not need it).

    Raises:
        FileNotFoundError: no index in `index_dir`.
        IndexDamagedError: a file is missing, truncated, unreadable or inconsistent; the message names it.
    """

    def __init__(self, index_dir: str | Path, verify: bool = False, load_vectors: bool = True):
        self.index_dir = Path(index_dir)
        if self.index_dir.exists() and not self.index_dir.is_dir():
            raise NotADirectoryError(f"{self.index_dir} is a file, not an index folder written by index_videos.")
        if not os.path.lexists(self.index_dir / METADATA_FILE):
            raise FileNotFoundError(f"{self.index_dir} is not a video index (no {METADATA_FILE}); build it first.")
        # Searches take no lock: an indexer may switch generations (and remove the old one) between our reading of
        # index.json and of the files it names. A file gone while index.json names another generation is that
        # race, not damage: read the new index.json and open its generation.
        for attempt in range(OPEN_ATTEMPTS):
            self.metadata = read_metadata(self.index_dir)
            try:
                self._load(verify, load_vectors)
                return
            except _GenerationReplaced as replaced:
                if attempt + 1 == OPEN_ATTEMPTS or _recorded_generation(self.index_dir) == _generation_of(
                    self.metadata
                ):
                    raise self._damaged(replaced.name, replaced.reason) from None

    def _load(self, verify: bool, load_vectors: bool) -> None:
        files = self.metadata["files"]
        self._check_files(verify, load_vectors)
        num_videos, dim = self.metadata["num_videos"], self.metadata["embedding_dim"]
        self.table = self._open(files["table"], read_table)
        self.embeddings = self._open(files["embeddings"], np.load, mmap_mode="r")
        self.frames = self._open(files["frames"], np.load, mmap_mode="r")
        self.frame_times = self._open(files["frame_times"], np.load, mmap_mode="r")
        num_frames = self.metadata["num_frames"]
        expected = {
            "table": (self.table.num_rows, num_videos),
            "embeddings": (self.embeddings.shape, (num_videos, dim)),
            "frames": (self.frames.shape, (num_frames, self.metadata["projection_dim"])),
            "frame_times": (self.frame_times.shape, (num_frames,)),
        }
        for key, (found, wanted) in expected.items():
            if found != wanted:
                raise self._damaged(files[key], f"holds {found} rows/shape, index.json says {wanted}")
        if self.table.schema != TABLE_SCHEMA:
            raise self._damaged(files["table"], f"unexpected columns {self.table.schema.names}")
        self.paths: list[str] = self.table.column("path").to_pylist()
        self._frame_start = self.table.column("frame_start").to_numpy()
        self._frame_count = self.table.column("frame_count").to_numpy()
        if num_videos and (
            self._frame_start.min() < 0 or (self._frame_start + self._frame_count).max() > num_frames
        ):
            raise self._damaged(files["table"], "frame ranges outside the frames file")
        self.vectors = None
        if files.get("vectors") and load_vectors:
            import faiss

            self.vectors = self._open(files["vectors"], lambda path: faiss.read_index(str(path)))
            if self.vectors.ntotal != num_videos or self.vectors.d != dim:
                raise self._damaged(
                    files["vectors"],
                    f"holds {self.vectors.ntotal} vectors of {self.vectors.d}, expected {num_videos} of {dim}",
                )

    # -- loading ----------------------------------------------------------------------------------------------

    def _damaged(self, name: str, reason: str) -> IndexDamagedError:
        return damaged(self.index_dir / name, reason, self.index_dir, self.metadata)

    def _open(self, name: str, reader, **kwargs):
        try:
            return reader(self.index_dir / name, **kwargs)
        except Exception as error:  # each reader has its own errors (ValueError, ArrowInvalid, RuntimeError, ...)
            if not os.path.lexists(self.index_dir / name):
                raise _GenerationReplaced(name, "missing") from None
            raise self._damaged(name, f"{type(error).__name__}: {error}") from error

    def _check_files(self, verify: bool, load_vectors: bool) -> None:
        """Every file of the generation is a regular file of the size recorded when it was written, checked before
        anything is read from it: a FIFO, a device or a link to one never blocks or floods a reader."""
        for key, name in self.metadata["files"].items():
            if not name or (key == "vectors" and not load_vectors):
                continue
            path = self.index_dir / name
            try:
                found = os.lstat(path)
            except FileNotFoundError:
                raise _GenerationReplaced(name, "missing") from None
            if not stat.S_ISREG(found.st_mode):
                raise self._damaged(name, "not a regular file (the indexer writes only regular files)")
            record = self.metadata["checksums"].get(name)
            if record is None:
                raise self._damaged(name, f"no size and checksum recorded for it in {METADATA_FILE}")
            if found.st_size != record["size"]:
                raise self._damaged(name, f"{found.st_size} bytes, {record['size']} when written")
            if verify and file_checksum(path) != record["blake2b"]:
                raise self._damaged(name, "contents differ from the checksum recorded when it was written")

    # -- properties -----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.metadata["num_videos"]

    @property
    def video_root(self) -> Path:
        return Path(self.metadata["video_root"])

    @property
    def logit_scale(self) -> float:
        """`model.logit_scale.exp()` of the model the index was built with."""
        return float(self.metadata["logit_scale"])

    @property
    def index_type(self) -> str:
        return self.metadata["vector_index"]["type"]

    def describe_search(self, parameters: SearchParameters | None = None) -> str:
        """How a query with `parameters` is answered, and the recall@10 measured when the index was built."""
        parameters = parameters or SearchParameters()
        settings = self.metadata["vector_index"]
        if parameters.exact or (parameters.exact is None and self.index_type == "exact"):
            return f"exact search of {len(self)} videos (recall 1)"
        measured = settings.get("measured_recall_at_10")
        recall = "not measured (built before recall was measured)" if measured is None else f"{measured:.3f}"
        if self.index_type == "pq":  # its knob is the number of candidates: at least the calibrated one
            used = self.rescored_candidates(parameters)
            return (
                f"pq search of {len(self)} videos ({used} candidates re-scored exactly); recall@10 measured at "
                f"build: {recall}"
                + (f" (with {settings['candidates']} candidates)" if used != settings["candidates"] else "")
            )
        knobs = {"ivf": ("nprobe", parameters.nprobe), "hnsw": ("ef_search", parameters.ef_search)}
        key, value = knobs[self.index_type]
        changed = (value not in (None, settings.get(key))) or parameters.candidates != DEFAULT_CANDIDATES
        return (
            f"{self.index_type} search of {len(self)} videos ({key} {value or settings.get(key)}, "
            f"{parameters.candidates} candidates re-scored exactly); recall@10 measured at build: {recall}"
            + (f" (with {key} {settings.get(key)}, {DEFAULT_CANDIDATES} candidates)" if changed else "")
        )

    def rescored_candidates(self, parameters: SearchParameters) -> int:
        """Videos an approximate search proposes for exact re-scoring: `parameters.candidates`, and for a PQ scan at
        least the number its calibration chose (`vector_index.candidates`)."""
        return max(parameters.candidates, self.metadata["vector_index"].get("candidates", 0))

    def check_model(self, model, force: bool = False) -> None:
        """Raises `ModelMismatchError` unless `model` is the model the index was built with (same weights and
        config), or `force` (then only the embedding width must agree)."""
        built_with = self.metadata["model"]
        if not force:
            given = cached_model_fingerprint(model)
            if given["hash"] != built_with["hash"]:
                raise ModelMismatchError(
                    f"{self.index_dir} was built with the model {built_with['name']!r} (fingerprint "
                    f"{built_with['hash'][:12]}), not with {given['name']!r} (fingerprint {given['hash'][:12]}): its "
                    "embeddings are not comparable. Query with the model the index was built with, rebuild the index "
                    "with this model (--rebuild), or pass force=True / --force to search anyway."
                )
        width = retrieval_embedding_dim(model.config)
        if self.metadata["embedding_dim"] != width:
            raise ModelMismatchError(
                f"{self.index_dir} stores {self.metadata['embedding_dim']}-dimensional embeddings, the model "
                f"gives {width}-dimensional ones."
            )

    # -- search -------------------------------------------------------------------------------------------------

    def nearest(
        self, text_embeddings: np.ndarray, k: int, parameters: SearchParameters | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores (`logits_per_text`) and rows of the `k` best videos for each text: two `[texts, min(k, videos)]`
        arrays, best first, ties by lower row. `text_embeddings`: `[texts, embedding_dim]` (`pooler_output`)."""
        parameters = parameters or SearchParameters()
        if parameters.filter:
            raise ValueError("A filter needs the Milvus store (--store milvus); the file index searches every video.")
        queries = self._check_queries(text_embeddings)
        check_positive_integer(k, "k")
        k = min(k, len(self))
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        exact = self.index_type == "exact" if parameters.exact is None else parameters.exact
        if exact:
            inner, rows = exact_top_k(self.embeddings, queries, k, unit_rows=True)
            returned = np.unique(rows)
            self._check_rows(np.asarray(self.embeddings[returned], np.float32), returned)
            return self.logit_scale * inner, rows
        if self.vectors is None:
            raise ValueError(f"{self.index_dir} has no approximate index ({self.index_type}); search it exactly.")
        check_positive_integer(parameters.candidates, "candidates")
        candidates = min(max(k, self.rescored_candidates(parameters)), len(self))
        self._configure(parameters)
        _, proposed = self.vectors.search(queries, candidates)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        best_rows = np.zeros((len(queries), k), np.int64)
        for query_index, rows in enumerate(proposed):
            rows = np.unique(rows[rows >= 0])  # sorted: sequential reads of the memory map
            if len(rows) < k:  # the probed lists held fewer videos than asked: answer this text exactly
                inner, found = exact_top_k(self.embeddings, queries[query_index : query_index + 1], k)
                scores[query_index], best_rows[query_index] = inner[0], found[0]
                continue
            stored = np.asarray(self.embeddings[rows], np.float32)
            self._check_rows(stored, rows)
            inner, order = _sorted((stored @ queries[query_index])[None], rows[None])
            scores[query_index], best_rows[query_index] = inner[0, :k], order[0, :k]
        return self.logit_scale * scores, best_rows

    def search(
        self,
        text_embeddings: np.ndarray,
        k: int = 10,
        moment_embeddings: np.ndarray | None = None,
        parameters: SearchParameters | None = None,
    ) -> list[list[SearchHit]] | list[SearchHit]:
        """The `k` best videos for each text, best first, with their best-matching moments.

        Args:
            text_embeddings: `[texts, embedding_dim]` or `[embedding_dim]`: `get_text_features(...).pooler_output`.
            k: videos per text, at least 1 (fewer when the index is smaller).
            moment_embeddings: `[texts, projection_dim]`: `get_text_features(...).global_embeds`, to find each hit's
                best frame; without them the moments are NaN.
            parameters: exact or approximate search and its settings.

        Returns:
            One list of `SearchHit` per text (a single list for a 1-D `text_embeddings`).
        """
        single = np.ndim(text_embeddings) == 1
        scores, rows = self.nearest(np.atleast_2d(text_embeddings), k, parameters)
        moments = unit_moment_embeddings(moment_embeddings, len(scores), self.metadata["projection_dim"])
        results = []
        for query_index in range(len(scores)):
            hits = []
            for score, row in zip(scores[query_index], rows[query_index]):
                seconds = similarity = math.nan
                if moments is not None:
                    start, stop = self.frame_range(row)
                    seconds, similarity = best_moment(
                        self.frames[start:stop], self.frame_times[start:stop], moments[query_index]
                    )
                hits.append(SearchHit(self.paths[int(row)], float(score), seconds, similarity))
            results.append(hits)
        return results[0] if single else results

    def frame_range(self, row: int) -> tuple[int, int]:
        """The rows `[start, stop)` of `frames` and `frame_times` that hold the sampled frames of video `row`."""
        start = int(self._frame_start[row])
        return start, start + int(self._frame_count[row])

    def _check_queries(self, text_embeddings) -> np.ndarray:
        queries = np.ascontiguousarray(np.atleast_2d(np.asarray(text_embeddings, np.float32)))
        dim = self.metadata["embedding_dim"]
        if queries.ndim != 2 or queries.shape[1] != dim:
            raise ValueError(
                f"text embeddings must have shape (texts, {dim}) for {self.index_dir}, got "
                f"{np.shape(text_embeddings)}: "
                "was the index built with another model?"
            )
        if not np.isfinite(queries).all():
            raise ValueError("text embeddings contain NaN or infinite values.")
        return queries

    def _check_rows(self, stored: np.ndarray, rows: np.ndarray) -> None:
        # Stored embeddings are unit vectors: a re-scored row that is not one is damage, never a score to return.
        norms = np.linalg.norm(stored, axis=1)
        bad = ~(np.abs(norms - 1) < 1e-2)
        if bad.any():
            raise self._damaged(
                self.metadata["files"]["embeddings"],
                f"row {int(rows[bad][0])} is not a unit vector (norm {norms[bad][0]})",
            )

    def _configure(self, parameters: SearchParameters) -> None:
        import faiss

        settings = self.metadata["vector_index"]
        if self.index_type == "ivf":
            nprobe = parameters.nprobe or settings["nprobe"]
            check_positive_integer(nprobe, "nprobe")
            faiss.extract_index_ivf(self.vectors).nprobe = nprobe
        elif self.index_type == "hnsw":
            ef_search = parameters.ef_search or settings["ef_search"]
            check_positive_integer(ef_search, "ef_search")
            faiss.downcast_index(self.vectors).hnsw.efSearch = max(ef_search, parameters.candidates)


class _GenerationReplaced(Exception):
    """A file of the generation being opened is gone (`VideoIndex` reads `index.json` again to tell a commit that
    replaced the generation from damage)."""

    def __init__(self, name: str, reason: str):
        super().__init__(name, reason)
        self.name, self.reason = name, reason


def _generation_of(metadata: dict) -> tuple:
    return metadata.get("generation"), tuple(sorted((k, v) for k, v in metadata["files"].items() if v))


def _recorded_generation(index_dir: Path) -> tuple | None:
    """The generation `index.json` names now (None if it cannot be read)."""
    try:
        return _generation_of(read_metadata(index_dir))
    except IndexDamagedError:
        return None


def check_positive_integer(value, name: str) -> None:
    """Raises `ValueError` naming `name` unless `value` is an integer >= 1 (a bool is not): `k`, `candidates`,
    `nprobe`, `ef_search` of a search."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------


def read_table(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def write_table(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def open_regular(path: Path) -> int:
    """A read-only descriptor of `path`, which must be a regular file (not a link, FIFO, device or folder): opened
    without following a link and without blocking, then checked, so that no file type can hang or flood a reader."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, f"{path} is a symbolic link, not a regular file") from None
        raise
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    return descriptor


def file_checksum(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with os.fdopen(open_regular(path), "rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _whole(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _file_name(value) -> bool:
    """A plain name in the index folder: no folder part, not hidden (temporaries are), printable."""
    return isinstance(value, str) and 0 < len(value) <= 255 and value.isprintable() and "/" not in value and (
        "\\" not in value and not value.startswith(".")
    )


def read_metadata(index_dir: Path) -> dict:
    """`index.json`, checked: an unreadable, incomplete or hand-edited one (wrong types, a non-finite or
    non-positive `logit_scale`, negative sizes, file names outside the folder) raises `IndexDamagedError` naming it."""
    path = index_dir / METADATA_FILE
    try:
        with os.fdopen(open_regular(path), "rb") as file:
            if os.fstat(file.fileno()).st_size > MAX_METADATA_BYTES:
                raise ValueError(f"over {MAX_METADATA_BYTES} bytes")
            metadata = json.loads(file.read(MAX_METADATA_BYTES + 1).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise damaged(path, f"{type(error).__name__}: {error}", index_dir) from error
    if not isinstance(metadata, dict):
        raise damaged(path, "not a JSON object", index_dir)
    required = {
        "format": int, "model": dict, "embedding_dim": int, "projection_dim": int, "logit_scale": (int, float),
        "num_videos": int, "num_frames": int, "video_root": str, "files": dict, "checksums": dict, "vector_index": dict,
    }
    for key, kind in required.items():
        value = metadata.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise damaged(path, f"no valid {key!r}", index_dir, metadata)
    if metadata["format"] != FORMAT_VERSION:
        reason = f"format {metadata['format']}, this code reads format {FORMAT_VERSION}"
        raise damaged(path, reason, index_dir, metadata)
    if not all(isinstance(metadata["model"].get(key), str) and metadata["model"][key] for key in ("name", "hash")):
        raise damaged(path, "no valid model fingerprint", index_dir, metadata)
    if not (0 < metadata["logit_scale"] <= MAX_LOGIT_SCALE):  # NaN fails too
        reason = f"logit_scale {metadata['logit_scale']!r} is not a positive number up to {MAX_LOGIT_SCALE:g}"
        raise damaged(path, reason, index_dir, metadata)
    for key, minimum in (("embedding_dim", 1), ("projection_dim", 1), ("num_videos", 0), ("num_frames", 0)):
        if not _whole(metadata[key], minimum):
            raise damaged(path, f"{key} {metadata[key]!r} is not an integer >= {minimum}", index_dir, metadata)
    if metadata.get("embedding_dtype", "float32") not in ("float16", "float32"):
        raise damaged(path, f"unknown embedding_dtype {metadata['embedding_dtype']!r}", index_dir, metadata)
    if not isinstance(metadata.get("generation", ""), str):
        raise damaged(path, "no valid 'generation'", index_dir, metadata)
    files = metadata["files"]
    for key, name in files.items():  # the four below are required; others (vectors, ...) may be null
        if not (_file_name(name) or (name is None and key not in ("table", "embeddings", "frames", "frame_times"))):
            raise damaged(path, f"no valid file name for {key!r}", index_dir, metadata)
    for key in ("table", "embeddings", "frames", "frame_times"):
        if key not in files:
            raise damaged(path, f"no valid file name for {key!r}", index_dir, metadata)
    for name in filter(None, files.values()):
        record = metadata["checksums"].get(name)
        if not (
            isinstance(record, dict) and _whole(record.get("size"), 0) and isinstance(record.get("blake2b"), str)
        ):
            raise damaged(path, f"no valid size and checksum recorded for {name!r}", index_dir, metadata)
    settings = metadata["vector_index"]
    if settings.get("type") not in ("exact", "ivf", "pq", "hnsw") or (
        (settings["type"] == "exact") != (files.get("vectors") is None)
    ):
        raise damaged(path, "vector index type and files disagree", index_dir, metadata)
    for key in {"ivf": ("nlist", "nprobe"), "pq": ("candidates",), "hnsw": ("ef_search",)}.get(settings["type"], ()):
        if not _whole(settings.get(key), 1):
            raise damaged(path, f"vector_index {key} {settings.get(key)!r} is not a positive integer", index_dir, metadata)
    return metadata

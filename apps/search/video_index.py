"""A searchable video collection: one `datasets` row per video (its retrieval embedding, its frames' CLIP embeddings
and their timestamps) and a vector index over the retrieval embeddings.

The score of a video for a text is the model's own `logits_per_text`: `logit_scale.exp() * text @ video`, with the
L2-normalised embeddings of `get_text_features` / `get_video_features`. The search is exact (FAISS `IndexFlatIP`
when `faiss` is installed, a matrix product otherwise), so the ranking is the model's ranking.

The best-matching moment of a hit is its sampled frame whose CLIP embedding is closest to the caption's global
embedding (the first `projection_dim` values of the text embedding, normalised): where in the video the words match
best, at the frame rate the model samples.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np


VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".ogv",
)
FEATURES = datasets.Features(
    {
        "path": datasets.Value("string"),  # relative to the indexed folder
        "size": datasets.Value("int64"),
        "mtime_ns": datasets.Value("int64"),
        "embedding": datasets.Sequence(datasets.Value("float32")),
        "frame_embeddings": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
        "frame_times": datasets.Sequence(datasets.Value("float64")),
    }
)
TABLE_DIR = "videos"
FAISS_FILE = "embedding.faiss"
METADATA_FILE = "index.json"
EMBEDDING_COLUMN = "embedding"


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def list_videos(folder: Path) -> list[Path]:
    """Every file under `folder` (recursively) with a video extension, sorted, hidden files and folders left out."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in VIDEO_EXTENSIONS
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


@dataclass
class SearchHit:
    """One video found for a query.

    Attributes:
        path (`str`): the video, relative to the indexed folder.
        score (`float`): the model's `logits_per_text` for the query and this video.
        moment_seconds (`float`): time of the sampled frame that matches the query best (NaN if unknown).
        moment_similarity (`float`): cosine similarity of that frame's CLIP embedding and the query's.
    """

    path: str
    score: float
    moment_seconds: float
    moment_similarity: float


class VideoIndex:
    """A folder written by `apps.search.index_videos`: the table, the FAISS index and `index.json`."""

    def __init__(self, index_dir: str | Path):
        self.index_dir = Path(index_dir)
        metadata_file = self.index_dir / METADATA_FILE
        if not metadata_file.is_file():
            raise FileNotFoundError(f"{self.index_dir} is not a video index (no {METADATA_FILE}); build it first.")
        self.metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
        self.table = datasets.load_from_disk(str(self.index_dir / TABLE_DIR))
        self.uses_faiss = faiss_available() and (self.index_dir / FAISS_FILE).is_file()
        if self.uses_faiss:
            self.table.load_faiss_index(EMBEDDING_COLUMN, str(self.index_dir / FAISS_FILE))
            self._embeddings = None
        else:
            self._embeddings = embedding_matrix(self.table)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def video_root(self) -> Path:
        return Path(self.metadata["video_root"])

    def nearest(self, text_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Inner products and row indices of the `k` best videos for each text: two `[texts, k]` arrays, best first
        (fewer than `k` columns when the index is smaller)."""
        queries = np.ascontiguousarray(np.atleast_2d(text_embeddings), dtype=np.float32)
        k = min(k, len(self.table))
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self.uses_faiss:
            results = self.table.search_batch(EMBEDDING_COLUMN, queries, k=k)
            return np.asarray(results.total_scores, np.float32), np.asarray(results.total_indices, np.int64)
        return exact_top_k(self._embeddings, queries, k)

    def search(self, text_embedding: np.ndarray, logit_scale: float, k: int = 10) -> list[SearchHit]:
        """The `k` best videos for one text embedding (from `get_text_features`), with their best moments."""
        text_embedding = np.asarray(text_embedding, np.float32).reshape(-1)
        inner_products, rows = self.nearest(text_embedding, k)
        projection_dim = self.metadata["projection_dim"]
        text_global = text_embedding[:projection_dim] / max(np.linalg.norm(text_embedding[:projection_dim]), 1e-12)
        hits = []
        for inner_product, row in zip(inner_products[0], rows[0]):
            record = self.table[int(row)]
            frames = np.asarray(record["frame_embeddings"], np.float32)
            similarities = frames @ text_global
            best = int(np.argmax(similarities))
            hits.append(
                SearchHit(
                    path=record["path"],
                    score=float(logit_scale * inner_product),
                    moment_seconds=float(record["frame_times"][best]),
                    moment_similarity=float(similarities[best]),
                )
            )
        return hits


def embedding_matrix(table: datasets.Dataset) -> np.ndarray:
    if len(table) == 0:
        return np.zeros((0, 0), np.float32)
    return np.asarray(table.with_format("numpy")[EMBEDDING_COLUMN], dtype=np.float32)


def exact_top_k(embeddings: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact maximum inner product search: scores and indices `[queries, k]`, best first, ties by lower index."""
    scores = queries @ embeddings.T
    if k < scores.shape[1]:
        candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        candidates = np.tile(np.arange(scores.shape[1]), (len(queries), 1))
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    order = np.lexsort((candidates, -candidate_scores), axis=1)
    indices = np.take_along_axis(candidates, order, axis=1)
    return np.take_along_axis(scores, indices, axis=1), indices

"""Exact search at memory speed (`video_index.exact_top_k`) and the recall `--index_type auto` guarantees
(`index_build.build_calibrated_index`): numbers against independent float64 computations."""

import numpy as np
import pytest

from clip2video.apps.search import SearchParameters, VideoIndex
from clip2video.apps.search.index_build import (
    TARGET_RECALL, TEXT_VIDEO_COSINE, IndexSpec, RecallTooLowError, VectorIndexOptions, commit, text_like_queries,
)
from clip2video.apps.search.video_index import _PIECE_ROWS, _QUERY_BLOCK, _SCAN_ROWS, _SELECT_QUERIES, exact_top_k
from tests.helpers.search_fixtures import part_of_empty_files, synthetic_index


def unit(rows: int, dim: int, seed: int, dtype=np.float32) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(dtype)


def reference(embeddings: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 inner products, best first, ties by lower row (a stable sort)."""
    scores = queries.astype(np.float64) @ np.asarray(embeddings, np.float64).T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, 1), rows


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_exact_search_of_a_memory_map_across_pieces_and_chunks_equals_float64(dtype, tmp_path):
    # More rows than a chunk of the scan and not a multiple of a piece: every boundary is crossed.
    rows = _SCAN_ROWS + _PIECE_ROWS + 123
    stored = np.lib.format.open_memmap(tmp_path / "e.npy", "w+", dtype, (rows, 8))
    stored[:] = unit(rows, 8, seed=0, dtype=dtype)
    stored.flush()
    embeddings = np.load(tmp_path / "e.npy", mmap_mode="r")
    queries = unit(5, 8, seed=1)
    scores, found = exact_top_k(embeddings, queries, 20)
    expected_scores, expected_rows = reference(embeddings, queries, 20)
    np.testing.assert_array_equal(found, expected_rows)
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-6)  # float32 arithmetic, exact widening
    assert scores.dtype == np.float32 and found.dtype == np.int64


def test_exact_search_breaks_ties_by_lower_row_across_chunks():
    # 40 copies of the best vector, spread over two chunks and many pieces: the 10 lowest rows win.
    embeddings = unit(_SCAN_ROWS + 5000, 4, seed=2)
    embeddings[:, 0] *= 0.5
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    copies = np.sort(np.random.default_rng(3).choice(len(embeddings), 40, replace=False))
    embeddings[copies] = [1.0, 0.0, 0.0, 0.0]
    scores, found = exact_top_k(embeddings, np.array([[1.0, 0.0, 0.0, 0.0]], np.float32), 10)
    assert found[0].tolist() == copies[:10].tolist()
    assert scores[0].tolist() == [1.0] * 10


def test_batched_exact_search_equals_one_query_at_a_time():
    embeddings = unit(3000, 16, seed=4, dtype=np.float16)
    queries = unit(_QUERY_BLOCK + 7, 16, seed=5)  # more than one block of queries
    scores, found = exact_top_k(embeddings, queries, 7)
    for line in (0, _QUERY_BLOCK - 1, _QUERY_BLOCK, len(queries) - 1):
        one_scores, one_found = exact_top_k(embeddings, queries[line : line + 1], 7)
        np.testing.assert_array_equal(found[line], one_found[0])
        np.testing.assert_allclose(scores[line], one_scores[0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(found, reference(embeddings, queries, 7)[1])


def tiny_topics(rows: int, dim: int, topics: int, seed: int) -> np.ndarray:
    """Topics of ~4 videos: IVF lists mix many topics, and probing a few lists misses neighbours."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, dim))
    vectors = centres[rng.integers(0, topics, rows)] + 0.5 * rng.standard_normal((rows, dim)) / np.sqrt(dim)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def measured_recall(index: VideoIndex, vectors: np.ndarray, queries: np.ndarray) -> float:
    _, truth = reference(vectors, queries, 10)
    _, found = index.nearest(queries, 10)
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))


@pytest.mark.slow
def test_auto_replaces_an_ivf_index_below_the_target_recall_by_hnsw(tmp_path):
    pytest.importorskip("faiss")
    vectors = tiny_topics(2500, 32, topics=600, seed=6)
    index = synthetic_index(tmp_path, vectors, index_type="auto", approximate_above=100, embedding_dtype="float32")
    settings = index.metadata["vector_index"]
    # IVF was built, measured below the target at its widest search, and replaced.
    assert settings["instead_of"]["type"] == "ivf" and settings["instead_of"]["measured_recall_at_10"] < TARGET_RECALL
    assert settings["type"] == "hnsw" and settings["measured_recall_at_10"] >= TARGET_RECALL
    # Before HNSW, the PQ scan was tried too (cheaper to build), and stayed below at its most candidates.
    assert [(t["type"], t["measured_recall_at_10"] < TARGET_RECALL) for t in settings["tried"]] == [
        ("ivf", True), ("pq", True)]
    # Independently: fresh queries of the same topics find the exact top 10.
    queries = vectors[::25] + 0.2 * unit(100, 32, seed=9) / np.sqrt(32)
    assert measured_recall(index, vectors, queries) >= TARGET_RECALL
    described = index.describe_search()
    assert f"recall@10 measured at build: {settings['measured_recall_at_10']:.3f}" in described
    assert "hnsw search of 2500 videos" in described
    assert index.describe_search(SearchParameters(exact=True)) == "exact search of 2500 videos (recall 1)"


def clip_like(rows: int, dim: int, topics: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Video embeddings and 100 text queries shaped as `benchmarks/benchmark_search.py`'s, small: a cone direction
    per modality, Zipf-sized topics with 4 sub-topics, a variation shared by all topics (8 dimensions), noise."""
    rng = np.random.default_rng(seed)
    video_cone, text_cone = unit(2, dim, seed + 1)
    centres, subtopics = unit(topics, dim, seed + 2), unit(topics * 4, dim, seed + 3).reshape(topics, 4, dim)
    basis = np.linalg.qr(rng.standard_normal((dim, 8)))[0].T
    popularity = 1.0 / np.arange(1, topics + 1) ** 0.8

    def sample(count, cone):
        topic, sub = rng.choice(topics, count, p=popularity / popularity.sum()), rng.integers(0, 4, count)
        vectors = (
            0.7 * cone + centres[topic] + 0.5 * subtopics[topic, sub]
            + (0.6 / np.sqrt(8)) * rng.standard_normal((count, 8)) @ basis
            + 0.25 * rng.standard_normal((count, dim)) / np.sqrt(dim)
        )
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    return sample(rows, video_cone), sample(100, text_cone)


def test_recall_is_measured_with_text_like_queries_and_auto_reaches_it_for_text(tmp_path):
    """Stored videos as calibration queries overstated IVF's recall (each sits among its own near-duplicates): on
    this collection they measure >= 0.99 while text queries find fewer than 99% of their true top 10, and `auto`
    kept IVF. Measured with text-like queries, IVF is below the target and `auto` builds HNSW, which finds them."""
    pytest.importorskip("faiss")
    vectors, texts = clip_like(4000, 64, topics=150, seed=1)
    ivf = synthetic_index(tmp_path / "ivf", vectors, index_type="ivf", embedding_dtype="float32")
    assert measured_recall(ivf, vectors, texts) < TARGET_RECALL
    # What calibrating on stored videos (each left out of its own answer) says of the same IVF index.
    _, truth = reference(vectors, vectors[::40], 11)
    _, found = ivf.nearest(vectors[::40], 11)
    stored = np.mean([len(set(f) & set(t) - {row}) / 10 for f, t, row in zip(found, truth, range(0, 4000, 40))])
    assert stored >= TARGET_RECALL > ivf.metadata["vector_index"]["measured_recall_at_10"]
    index = synthetic_index(tmp_path / "auto", vectors, index_type="auto", approximate_above=100,
                            embedding_dtype="float32")
    settings = index.metadata["vector_index"]
    assert settings["type"] == "hnsw" and settings["instead_of"]["type"] == "ivf"
    assert settings["measured_recall_at_10"] >= TARGET_RECALL and measured_recall(index, vectors, texts) >= TARGET_RECALL


def test_text_like_queries_are_unit_turned_from_their_videos_and_out_of_the_cone():
    # Videos in a common cone, otherwise nearly orthogonal (2048 dimensions): each query's best video is its source.
    vectors = unit(300, 2048, seed=3) + 0.7 * unit(1, 2048, seed=4)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = text_like_queries(vectors, 100)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1, atol=1e-5)
    mean = vectors.mean(axis=0) / np.linalg.norm(vectors.mean(axis=0))
    assert np.abs(queries @ mean).max() < 1e-5  # out of the collection's own direction (the video cone)
    centred = vectors - (vectors @ mean)[:, None] * mean
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    similarities = queries @ centred.T
    np.testing.assert_allclose(similarities.max(axis=1), TEXT_VIDEO_COSINE, atol=1e-5)
    assert len(set(similarities.argmax(axis=1))) == 100 and np.sort(similarities, axis=1)[:, -2].max() < 0.2
    np.testing.assert_array_equal(text_like_queries(vectors, 100), queries)


@pytest.mark.slow
def test_auto_refuses_to_commit_an_index_below_the_target_recall(tmp_path):
    pytest.importorskip("faiss")
    first = unit(300, 64, seed=7)
    index = synthetic_index(tmp_path, first, index_type="auto")  # exact
    before = sorted(path.name for path in index.index_dir.iterdir())
    # Isotropic vectors (no structure for lists or a graph to follow) and a sparse graph: neither reaches 0.99.
    hard = unit(4000, 64, seed=8)
    metadata = index.metadata
    part = part_of_empty_files(tmp_path / "videos", [f"w{i:06d}.mp4" for i in range(len(hard))], hard, 1)
    with pytest.raises(RecallTooLowError, match=r"found no approximate index .* ivf \(nlist \d+, nprobe \d+\): 0\.\d+; "
                       r"pq \(m 16, candidates 256\): 0\.\d+; hnsw \(m 4, ef_search 2048\): 0\.\d+\)\. Nothing was committed.*"
                       r"--index_type exact"):
        commit(
            index.index_dir, IndexSpec.of(index), index, [part],
            VectorIndexOptions(index_type="auto", approximate_above=100, hnsw_m=4),
        )
    # The previous generation still answers, and nothing of the refused one is left behind.
    assert sorted(path.name for path in index.index_dir.iterdir()) == before
    again = VideoIndex(index.index_dir)
    assert len(again) == 300 and again.metadata["generation"] == metadata["generation"]
    np.testing.assert_array_equal(again.nearest(first[:3], 1)[1][:, 0], [0, 1, 2])


def test_float16_selection_of_unit_rows_equals_float64_across_chunks(tmp_path):
    from clip2video.apps.search.video_index import _selected_top_k

    rows = _SCAN_ROWS + 700  # two chunks: the candidates kept from the first compete with the second's
    stored = np.lib.format.open_memmap(tmp_path / "e.npy", "w+", np.float16, (rows, 32))
    stored[:] = unit(rows, 32, seed=11, dtype=np.float16)
    stored.flush()
    embeddings = np.load(tmp_path / "e.npy", mmap_mode="r")
    queries = 3.0 * unit(_SELECT_QUERIES + 3, 32, seed=12)  # not unit: scores scale with the query
    selected = _selected_top_k(embeddings, queries[:_SELECT_QUERIES], 10)
    assert selected is not None  # proven exact: no near-tie at the 10th place among random vectors
    expected_scores, expected_rows = reference(embeddings, queries, 10)
    # One block of queries, then more than one block (each selected on its own).
    for scores, found in (selected, exact_top_k(embeddings, queries, 10, unit_rows=True)):
        np.testing.assert_array_equal(found, expected_rows[: len(found)])
        np.testing.assert_allclose(scores, expected_scores[: len(found)], rtol=0, atol=1e-5)
        assert scores.dtype == np.float32 and found.dtype == np.int64


def test_float16_selection_gives_way_to_the_scan_when_ties_outnumber_its_candidates():
    from clip2video.apps.search.video_index import _SELECT_MARGIN, _selected_top_k

    # More copies of the best vector than candidates kept: which copies were kept is arbitrary, so the selection
    # cannot prove its answer and the float32 scan gives the 10 lowest rows.
    embeddings = unit(_SCAN_ROWS + 5000, 4, seed=13, dtype=np.float16)
    copies = np.sort(np.random.default_rng(14).choice(len(embeddings), _SELECT_MARGIN + 50, replace=False))
    embeddings[copies] = [1.0, 0.0, 0.0, 0.0]
    query = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    assert _selected_top_k(embeddings, query, 10) is None
    scores, found = exact_top_k(embeddings, query, 10, unit_rows=True)
    assert found[0].tolist() == copies[:10].tolist() and scores[0].tolist() == [1.0] * 10


def test_hnsw_build_breadth_is_an_option_recorded_with_the_index(tmp_path):
    faiss = pytest.importorskip("faiss")
    vectors = unit(500, 16, seed=15)
    index = synthetic_index(tmp_path, vectors, index_type="hnsw", hnsw_m=8, hnsw_ef_construction=24)
    settings = index.metadata["vector_index"]
    assert settings["type"] == "hnsw" and settings["m"] == 8 and settings["ef_construction"] == 24
    assert faiss.downcast_index(index.vectors).hnsw.efConstruction == 24
    assert settings["measured_recall_at_10"] >= TARGET_RECALL  # whatever the build breadth, recall is measured


def test_a_pq_scan_re_scores_its_candidates_exactly_and_calibrates_how_many(tmp_path):
    faiss = pytest.importorskip("faiss")
    vectors, texts = clip_like(9000, 256, topics=1000, seed=2)
    index = synthetic_index(tmp_path, vectors, index_type="pq", embedding_dtype="float32")
    settings = index.metadata["vector_index"]
    assert isinstance(index.vectors, faiss.IndexPQFastScan) and index.vectors.M == 64 == settings["m"]  # 4 dims each
    # 256 candidates measured below the target, so calibration doubled them up to a sixteenth of the videos (562).
    assert settings["candidates"] == 512 and settings["measured_recall_at_10"] < TARGET_RECALL
    # Hits are re-scored exactly: the k best of the candidates by their float64 scores, whatever the codes said.
    scores, rows = index.nearest(texts, 10)
    exact = texts.astype(np.float64) @ vectors.astype(np.float64).T
    np.testing.assert_allclose(scores, index.logit_scale * np.take_along_axis(exact, rows, 1), rtol=0, atol=1e-4)
    assert (np.diff(scores, axis=1) <= 0).all() and (rows >= 0).all()
    assert measured_recall(index, vectors, texts) >= 0.98
    # The calibrated number is a floor: asking fewer re-scores as many; more candidates never lose a true hit.
    assert np.array_equal(index.nearest(texts, 10, SearchParameters(candidates=16))[1], rows)
    _, truth = reference(vectors, texts, 10)
    _, wider = index.nearest(texts, 10, SearchParameters(candidates=4096))
    for narrow_hits, wide_hits, true in zip(rows, wider, truth):
        assert set(narrow_hits) & set(true) <= set(wide_hits) & set(true)
    # More candidates than videos: FAISS pads with -1, which never becomes a row.
    _, everything = index.nearest(texts[:3], 10, SearchParameters(candidates=20_000))
    np.testing.assert_array_equal(everything, truth[:3])
    assert index.describe_search() == (
        f"pq search of 9000 videos (512 candidates re-scored exactly); recall@10 measured at build: "
        f"{settings['measured_recall_at_10']:.3f}"
    )
    assert "(4096 candidates re-scored exactly)" in index.describe_search(SearchParameters(candidates=4096))
    # Reopened from disk: the same index answers the same.
    np.testing.assert_array_equal(VideoIndex(index.index_dir).nearest(texts, 10)[1], rows)

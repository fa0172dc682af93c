"""Video search: the indexing command on a real folder (recursive, unreadable files, resume), its ranking against
the model's `logits_per_text` for the exact and the approximate indexes, the best-matching moment against an
independent computation, and two processes with `accelerate launch`. The faults and misuse of the index are in
`test_search_faults.py`."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from clip2video.apps.search import SearchParameters, VideoIndex
from clip2video.apps.search.index_build import IndexSpec, VectorIndexOptions, commit
from clip2video.apps.search.indexer import IndexingOptions, VideoIndexer
from clip2video.apps.search.query_videos import search_texts
from clip2video.apps.search.video_index import exact_top_k
from clip2video.modeling_clip2video import CLIP2VideoModel
from tests.helpers.models import tiny_processor
from tests.helpers.processes import accelerate_launch
from tests.helpers.search_fixtures import rebuilt, run_indexer, synthetic_index, write_search_videos
from tests.helpers.videos import COLOURS, write_square_video


QUERIES = ["a red square slides to the right", "green", "a blue box on grey", "a dog barks"]


@pytest.fixture(scope="module")
def collection(tmp_path_factory, tiny_checkpoint):
    folder = tmp_path_factory.mktemp("search")
    checkpoint = tiny_checkpoint
    videos = folder / "videos"
    write_search_videos(videos)
    (videos / "notes.txt").write_text("not a video, not listed")
    index_dir = folder / "index"
    # No `datasets` cache may grow: point it at a folder of our own and check it stays empty.
    cache = folder / "hf_cache"
    env = {"HF_DATASETS_CACHE": str(cache / "datasets"), "HF_HOME": str(cache)}
    result = run_indexer(
        "--model", checkpoint, "--videos", videos, "--index_dir", index_dir, "--batch_size", 2, "--save_every", 2,
        env=env,
    )
    return folder, checkpoint, videos, index_dir, result.stdout, env


@pytest.fixture(scope="module")
def model_and_processor(collection):
    _, checkpoint, *_ = collection
    return CLIP2VideoModel.from_pretrained(checkpoint).eval(), tiny_processor()


def index_files(index_dir: Path) -> list[str]:
    return sorted(path.name for path in index_dir.iterdir() if path.is_file() and not path.name.startswith("."))


def test_indexes_recursively_and_reports_unreadable_files(collection):
    _, _, videos, index_dir, output, _ = collection
    index = VideoIndex(index_dir)
    assert index.paths == ["green.mp4", "nested/blue.mp4", "nested/deeper/yellow.mp4", "nested/short.mp4", "red.mp4"]
    assert "6 videos" in output and "Skipped 1 unreadable file" in output and "nested/broken.mp4" in output
    unreadable = json.loads((index_dir / "unreadable.json").read_text())
    assert list(unreadable) == ["nested/broken.mp4"]
    assert str(videos / "nested" / "broken.mp4") in unreadable["nested/broken.mp4"]
    assert index.metadata["num_videos"] == 5 and index.metadata["video_root"] == str(videos)
    assert index.index_type == "exact" and index.metadata["embedding_dtype"] == "float32"
    # The parts (resume points) were merged into the generation and removed: one copy of each embedding.
    assert list((index_dir / "parts").iterdir()) == []
    assert len([name for name in index_files(index_dir) if name.endswith((".npy", ".arrow", ".faiss"))]) == 4


@pytest.mark.parametrize("index_type", ["exact", "ivf", "hnsw"])
def test_ranking_equals_the_models_logits_per_text(collection, model_and_processor, index_type, tmp_path):
    _, _, videos, index_dir, _, _ = collection
    model, processor = model_and_processor
    index = VideoIndex(index_dir)
    if index_type != "exact":
        pytest.importorskip("faiss")
        index = rebuilt(index_dir, tmp_path / "index", index_type=index_type, nlist=2, embedding_dtype="float32")
        assert index.index_type == index_type and index.vectors is not None
    paths = index.paths
    hits = search_texts(index, model, processor, QUERIES, top_k=len(paths))

    inputs = processor(text=QUERIES, videos=[str(videos / path) for path in paths], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits_per_text
    for query_index, query_hits in enumerate(hits):
        expected = torch.argsort(logits[query_index], descending=True, stable=True).tolist()
        assert [hit.path for hit in query_hits] == [paths[i] for i in expected], QUERIES[query_index]
        torch.testing.assert_close(
            torch.tensor([hit.score for hit in query_hits]), logits[query_index, expected], rtol=0, atol=1e-4
        )
    top_two = search_texts(index, model, processor, QUERIES[:1], top_k=2)[0]
    assert [hit.path for hit in top_two] == [hit.path for hit in hits[0][:2]]


def test_float16_storage_scores_within_the_measured_bound(collection, model_and_processor, tmp_path):
    pytest.importorskip("faiss")
    _, _, videos, index_dir, _, _ = collection
    model, processor = model_and_processor
    index = rebuilt(index_dir, tmp_path / "index", index_type="ivf", nlist=2)  # auto storage: float16 if bound holds
    assert index.metadata["embedding_dtype"] == "float16"
    bound = index.metadata["float16_error_bound"]
    assert 0 < bound < 1e-3
    paths = index.paths
    inputs = processor(text=QUERIES, videos=[str(videos / path) for path in paths], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits_per_text.numpy()
    for query_index, query_hits in enumerate(search_texts(index, model, processor, QUERIES, top_k=len(paths))):
        for hit in query_hits:
            exact = logits[query_index, paths.index(hit.path)]
            assert abs(hit.score - exact) <= index.logit_scale * bound + 1e-5


def test_best_moment_is_the_frame_closest_to_the_caption(collection, model_and_processor):
    _, _, videos, index_dir, _, _ = collection
    model, processor = model_and_processor
    hits = search_texts(VideoIndex(index_dir), model, processor, QUERIES[:1], top_k=5)[0]
    with torch.no_grad():
        text = processor(text=QUERIES[:1], return_tensors="pt")
        caption = model.get_text_features(**text).global_embeds[0]
        for hit in hits:
            video = processor(videos=[str(videos / hit.path)], return_tensors="pt", return_timestamps=True)
            features = model.get_video_features(video["pixel_values_videos"], video["video_mask"])
            real = int(video["video_mask"].sum())
            # The index stores unit frame embeddings in float16, so frames closer than that rounding (random tiny
            # models give near-ties) are ranked as stored: the same rounding here, then the best within 1e-5.
            stored = torch.nn.functional.normalize(features.frame_embeds[0, :real], dim=-1).half().float()
            similarities = stored @ torch.nn.functional.normalize(caption, dim=-1)
            times = video["video_timestamps"][0, :real].tolist()
            assert hit.moment_seconds in times, (hit.moment_seconds, times)
            chosen = times.index(hit.moment_seconds)
            assert similarities[chosen] >= similarities.max() - 1e-5, (chosen, similarities)
            assert hit.moment_similarity == pytest.approx(similarities[chosen].item(), abs=1e-4)


def test_the_indexer_in_this_process_writes_the_commands_index_and_reports_progress(
    collection, model_and_processor, tmp_path
):
    _, _, videos, index_dir, _, _ = collection
    model, processor = model_and_processor
    shutil.copytree(videos, tmp_path / "videos")  # copy2: the same sizes and mtimes as the command indexed
    progress = []
    options = IndexingOptions(batch_size=2, save_every=2)
    indexer = VideoIndexer(model, processor, options, on_progress=lambda *done_total: progress.append(done_total))
    result = indexer.index(tmp_path / "videos", tmp_path / "index")
    # Six files in path order, the fourth unreadable: a report before the first batch, then one per batch of two.
    assert progress == [(0, 6), (2, 6), (4, 6), (5, 6)]
    assert (result.committed, result.listed, result.pending, result.embedded) == (True, 6, 6, 5)
    assert list(result.unreadable) == ["nested/broken.mp4"]
    ours, command = VideoIndex(tmp_path / "index"), VideoIndex(index_dir)
    assert ours.paths == command.paths and ours.metadata["model"] == command.metadata["model"]
    np.testing.assert_allclose(np.asarray(ours.embeddings), np.asarray(command.embeddings), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(ours.frame_times), np.asarray(command.frame_times))

    # Nothing changed (the unreadable file gone): `keep_unchanged` opens the index as it is, a default run commits.
    (tmp_path / "videos" / "nested" / "broken.mp4").unlink()
    generation = ours.metadata["generation"]
    kept = VideoIndexer(model, processor, IndexingOptions(keep_unchanged=True)).index(
        tmp_path / "videos", tmp_path / "index"
    )
    assert not kept.committed and VideoIndex(tmp_path / "index").metadata["generation"] == generation
    again = VideoIndexer(model, processor).index(tmp_path / "videos", tmp_path / "index")
    assert again.committed and (again.pending, again.embedded) == (0, 0)
    assert VideoIndex(tmp_path / "index").metadata["generation"] != generation
    with pytest.raises(ValueError, match="batch_size must be an integer of at least 1, got 0"):
        IndexingOptions(batch_size=0)
    with pytest.raises(ValueError, match="num_workers must be an integer of at least 0, got -1"):
        IndexingOptions(num_workers=-1)


@pytest.mark.slow
def test_resumes_and_follows_changes_without_growing(collection, tmp_path):
    _, checkpoint, videos, index_dir, _, env = collection
    shutil.copytree(videos, tmp_path / "videos")
    shutil.copytree(index_dir, tmp_path / "index")
    videos, index_dir = tmp_path / "videos", tmp_path / "index"
    before = VideoIndex(index_dir)
    embedding_before = dict(zip(before.paths, np.array(before.embeddings)))
    # Copies keep size and mtime (copytree uses copy2): nothing to redo but the unreadable file.
    write_square_video(videos / "nested" / "new.mp4", (20, 200, 200), num_frames=15)
    (videos / "green.mp4").unlink()
    write_square_video(videos / "red.mp4", COLOURS["blue"], num_frames=12)  # changed content: indexed again
    output = run_indexer("--model", checkpoint, "--videos", videos, "--index_dir", index_dir, env=env).stdout
    assert "6 videos" in output and "3 already indexed, 3 to index" in output, output

    index = VideoIndex(index_dir)
    assert index.paths == ["nested/blue.mp4", "nested/deeper/yellow.mp4", "nested/new.mp4", "nested/short.mp4", "red.mp4"]
    embedding_after = dict(zip(index.paths, np.array(index.embeddings)))
    np.testing.assert_array_equal(embedding_after["nested/blue.mp4"], embedding_before["nested/blue.mp4"])
    assert not np.allclose(embedding_after["red.mp4"], embedding_before["red.mp4"], atol=1e-3)
    assert list(json.loads((index_dir / "unreadable.json").read_text())) == ["nested/broken.mp4"]

    # A run with nothing new rewrites the same generation size and leaves no parts or old generations behind, and
    # no run ever wrote to the datasets cache.
    sizes = {name: (index_dir / name).stat().st_size for name in index_files(index_dir)}
    run_indexer("--model", checkpoint, "--videos", videos, "--index_dir", index_dir, env=env)
    after = {name: (index_dir / name).stat().st_size for name in index_files(index_dir)}
    assert sorted(after.values()) == sorted(sizes.values()) and len(after) == len(sizes)
    assert list((index_dir / "parts").iterdir()) == []
    cache = Path(env["HF_DATASETS_CACHE"])
    assert not cache.exists() or not any(path.is_file() for path in cache.rglob("*")), list(cache.rglob("*"))


def clustered_unit_vectors(
    count: int, dim: int, clusters: int, seed: int, spread: float = 0.35, centres_seed: int = 0
) -> np.ndarray:
    """Unit vectors around `clusters` random centres (drawn from `centres_seed`): what embeddings of a real
    collection look like (topics), unlike uniform random vectors. Queries share the centres, with their own seed."""
    centres = np.random.default_rng(centres_seed).standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((count, dim)).astype(np.float32) * spread / np.sqrt(dim)
    vectors = centres[rng.integers(0, clusters, count)] + noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize(
    "index_type, embedding_dtype, min_recall", [("ivf", "float32", 1.0), ("ivf", "float16", 1.0), ("hnsw", "float32", 0.99)]
)
def test_approximate_index_returns_the_exact_top_k_on_clustered_vectors(
    index_type, embedding_dtype, min_recall, tmp_path
):
    pytest.importorskip("faiss")
    vectors = clustered_unit_vectors(4000, 64, clusters=40, seed=0)
    index = synthetic_index(tmp_path, vectors, index_type=index_type, embedding_dtype=embedding_dtype)
    assert index.index_type == index_type and index.metadata["embedding_dtype"] == embedding_dtype
    # The recall measured at build time (stored videos as queries) is recorded with the settings that reached it.
    assert index.metadata["vector_index"]["measured_recall_at_10"] >= min_recall - 0.01
    queries = clustered_unit_vectors(200, 64, clusters=40, seed=1)
    exact_scores, exact_rows = exact_top_k(vectors, queries, 10)
    # Exact search over what is stored: for float32 the model's own scores, for float16 within the bound.
    stored_scores, stored_rows = exact_top_k(index.embeddings, queries, 10)
    scores, rows = index.nearest(queries, 10)
    recall = np.mean([len(set(found) & set(truth)) / 10 for found, truth in zip(rows, stored_rows)])
    assert recall >= min_recall
    found = rows == stored_rows
    # Hits are re-scored exactly: every score found is the stored embedding's, in the exact order.
    np.testing.assert_allclose(scores[found], 100.0 * stored_scores[found], rtol=0, atol=1e-4)
    assert np.all(np.diff(scores, axis=1) <= 0)
    bound = index.metadata["float16_error_bound"] if embedding_dtype == "float16" else 1e-6
    assert bound < 1e-3
    if recall == 1.0:
        np.testing.assert_array_equal(rows, stored_rows)
        np.testing.assert_allclose(scores, 100.0 * exact_scores, rtol=0, atol=100.0 * bound + 1e-4)
    # Exact search of the same index agrees, and so does a single 1-D query through `search`.
    _, exact_again = index.nearest(queries, 10, SearchParameters(exact=True))
    np.testing.assert_array_equal(exact_again, stored_rows)
    hits = index.search(queries[0], k=3)
    assert [hit.path for hit in hits] == [f"v{row:06d}.mp4" for row in stored_rows[0, :3]]


def test_approximate_index_with_too_few_candidates_falls_back_to_exact(tmp_path):
    pytest.importorskip("faiss")
    vectors = clustered_unit_vectors(3000, 32, clusters=30, seed=2)
    index = synthetic_index(tmp_path, vectors, index_type="ivf", nlist=64)
    queries = clustered_unit_vectors(5, 32, clusters=30, seed=3)
    # One list probed holds ~50 vectors: asking for 200 must still give the exact 200 best.
    _, rows = index.nearest(queries, 200, SearchParameters(nprobe=1, candidates=200))
    np.testing.assert_array_equal(rows, exact_top_k(index.embeddings, queries, 200)[1])


def test_exact_top_k_orders_ties_by_index_and_scans_in_chunks(monkeypatch):
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]], np.float32)
    scores, indices = exact_top_k(embeddings, np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), k=3)
    assert indices.tolist() == [[0, 2, 3], [1, 3, 0]]
    assert scores[0].tolist() == pytest.approx([1.0, 1.0, 0.6])
    monkeypatch.setattr("clip2video.apps.search.video_index._SCAN_ROWS", 7)
    vectors = clustered_unit_vectors(100, 16, clusters=3, seed=4).astype(np.float16)
    queries = clustered_unit_vectors(4, 16, clusters=3, seed=5)
    _, rows = exact_top_k(vectors, queries, 20)
    full = queries @ vectors.astype(np.float32).T
    np.testing.assert_array_equal(rows, np.argsort(-full, axis=1, kind="stable")[:, :20])


@pytest.mark.slow
def test_two_processes_with_accelerate_launch_give_the_same_index(collection, tmp_path):
    _, checkpoint, videos, index_dir, _, _ = collection
    output = run_indexer(
        "--model", checkpoint, "--videos", videos, "--index_dir", tmp_path / "index", "--batch_size", 2,
        "--save_every", 1, launch=accelerate_launch(2, port=29531), env={"OMP_NUM_THREADS": "1"},
    ).stdout
    assert "on 2 process(es)" in output and "process 0: embedded" in output and "process 1: embedded" in output
    two, one = VideoIndex(tmp_path / "index"), VideoIndex(index_dir)
    assert two.paths == one.paths
    np.testing.assert_allclose(np.asarray(two.embeddings), np.asarray(one.embeddings), rtol=0, atol=1e-5)
    assert json.loads((tmp_path / "index" / "unreadable.json").read_text()).keys() == {"nested/broken.mp4"}


def test_an_incremental_commit_reuses_the_ivf_training(tmp_path):
    pytest.importorskip("faiss")
    vectors = clustered_unit_vectors(3000, 32, clusters=30, seed=6)
    first = synthetic_index(tmp_path, vectors, index_type="ivf", embedding_dtype="float32")
    assert "trained" not in first.metadata["vector_index"]
    metadata = first.metadata
    commit(
        first.index_dir, IndexSpec.of(first), first, [], VectorIndexOptions(index_type="ivf", embedding_dtype="float32")
    )
    second = VideoIndex(first.index_dir)
    assert second.metadata["vector_index"]["trained"] == "reused"
    assert second.metadata["generation"] != metadata["generation"]
    queries = clustered_unit_vectors(20, 32, clusters=30, seed=7)
    np.testing.assert_array_equal(second.nearest(queries, 10)[1], exact_top_k(vectors, queries, 10)[1])


def test_a_checkpoint_saved_before_retrieval_embedding_dim_gives_the_width_from_its_fields(tmp_path):
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    from clip2video.apps.search.video_index import retrieval_embedding_dim
    from tests.helpers.models import save_tiny_checkpoint

    folder = save_tiny_checkpoint(tmp_path / "older", with_apps=False)
    # A checkpoint carries its own configuration code: as saved before the property existed.
    code = folder / "configuration_clip2video.py"
    text = code.read_text()
    start = text.index("    @property\n    def retrieval_embedding_dim")
    end = text.index("\n\n", text.index("return", start)) + 2
    code.write_text(text[:start] + text[end:])
    # The checkpoint's own class, as where this package does not register its classes with the Auto classes.
    config = get_class_from_dynamic_module("configuration_clip2video.CLIP2VideoConfig", folder).from_pretrained(folder)
    assert not hasattr(config, "retrieval_embedding_dim")
    model = CLIP2VideoModel(config).eval()
    videos = torch.rand(1, 3, 3, config.vision_config.image_size, config.vision_config.image_size)
    with torch.no_grad():
        width = model.get_video_features(videos, torch.ones(1, 3, dtype=torch.long)).pooler_output.shape[1]
    assert retrieval_embedding_dim(config) == width == 2 * config.projection_dim

"""`apps/search/index_build.py` and `video_index.py` internals, from docs/search.md: the float16 storage's error bound
recorded in `index.json` is max ||v - float16(v)|| (checked against brute force, and against the real score errors of
random unit queries), an incremental commit never lowers it, an approximate search never proposes FAISS's `-1`
padding as a video, and a part written with another model's fingerprint is refused. Generations are written from
hand-made parts over real files, without a model."""

import numpy as np
import pytest

from clip2video.apps.search.index_build import (
    IndexSpec,
    LoadedPart,
    Part,
    VectorIndexOptions,
    commit,
    file_key,
    read_part,
    write_part,
)
from clip2video.apps.search.video_index import SearchParameters, VideoIndex


EMBEDDING_DIM, PROJECTION_DIM, LOGIT_SCALE = 16, 8, 100.0
MODEL = {"name": "tiny", "hash": "a" * 64}


def unit(rows, dim, seed, scale=1.0):
    vectors = np.random.default_rng(seed).normal(size=(rows, dim)) * scale
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def videos(root, names):
    root.mkdir(exist_ok=True)
    for name in names:
        (root / name).write_bytes(name.encode())
    return [file_key(root / name, root) for name in names]


def part(keys, embeddings, name="part"):
    count = len(keys)
    return LoadedPart(
        name=name, paths=[key[0] for key in keys], sizes=np.array([key[1] for key in keys]),
        mtimes_ns=np.array([key[2] for key in keys]), embeddings=embeddings,
        frame_offsets=np.arange(count + 1), frames=unit(count, PROJECTION_DIM, 99), frame_times=np.zeros(count),
    )


def write(index_dir, root, parts, current=None, options=None):
    spec = IndexSpec(MODEL, LOGIT_SCALE, EMBEDDING_DIM, PROJECTION_DIM, root)
    options = options or VectorIndexOptions(index_type="exact", embedding_dtype="float16")
    return commit(index_dir, spec, current, parts, options)


def test_the_float16_bound_is_the_largest_rounding_and_bounds_every_score(tmp_path):
    root, index_dir = tmp_path / "videos", tmp_path / "index"
    keys = videos(root, [f"{i:03d}.mp4" for i in range(200)])
    embeddings = unit(200, EMBEDDING_DIM, 0)
    metadata = write(index_dir, root, [part(keys, embeddings)])
    brute = max(np.linalg.norm(v - v.astype(np.float16).astype(np.float32)) for v in embeddings.astype(np.float64))
    assert metadata["float16_error_bound"] == pytest.approx(brute, rel=1e-6)
    assert metadata["embedding_dtype"] == "float16"
    index = VideoIndex(index_dir)
    queries = unit(50, EMBEDDING_DIM, 1)
    scores, rows = index.nearest(queries, 200, SearchParameters(exact=True))
    exact = LOGIT_SCALE * (queries.astype(np.float64) @ embeddings.astype(np.float64).T)
    errors = np.abs(scores - np.take_along_axis(exact, rows, axis=1))
    assert errors.max() <= LOGIT_SCALE * metadata["float16_error_bound"] + 1e-4
    assert errors.max() > 0.05 * LOGIT_SCALE * metadata["float16_error_bound"]  # the bound is not loose by far


def test_an_incremental_commit_keeps_the_bound_of_the_vectors_it_keeps(tmp_path):
    root, index_dir = tmp_path / "videos", tmp_path / "index"
    first_keys = videos(root, [f"a{i:02d}.mp4" for i in range(40)])
    first = write(index_dir, root, [part(first_keys, unit(40, EMBEDDING_DIM, 2))])
    assert first["float16_error_bound"] > 0
    # Vectors exactly representable in float16 (unit basis vectors): their own rounding error is 0.
    added_keys = videos(root, [f"b{i:02d}.mp4" for i in range(8)])
    exact_vectors = np.eye(EMBEDDING_DIM, dtype=np.float32)[:8]
    second = write(index_dir, root, [part(added_keys, exact_vectors, "part-2")], current=VideoIndex(index_dir))
    assert second["num_videos"] == 48
    assert second["float16_error_bound"] >= first["float16_error_bound"]


def test_an_approximate_search_never_proposes_faiss_padding(tmp_path):
    pytest.importorskip("faiss")
    root, index_dir = tmp_path / "videos", tmp_path / "index"
    keys = videos(root, [f"{i:03d}.mp4" for i in range(300)])
    embeddings = unit(300, EMBEDDING_DIM, 3)
    options = VectorIndexOptions(index_type="ivf", nlist=16, nprobe=1, embedding_dtype="float32")
    write(index_dir, root, [part(keys, embeddings)], options=options)
    index = VideoIndex(index_dir)
    queries = unit(40, EMBEDDING_DIM, 4)
    # One list of about 19 videos probed, 256 candidates asked: FAISS pads its answer with -1 (checked here).
    import faiss

    faiss.extract_index_ivf(index.vectors).nprobe = 1
    assert (index.vectors.search(queries, 256)[1] == -1).any()
    scores, rows = index.nearest(queries, 10, SearchParameters(candidates=256, nprobe=1))
    assert rows.min() >= 0 and rows.max() < 300
    for query, query_scores, query_rows in zip(queries, scores, rows):
        assert len(set(query_rows.tolist())) == len(query_rows)
        expected = LOGIT_SCALE * (embeddings[query_rows] @ query)
        np.testing.assert_allclose(query_scores, expected, rtol=1e-5, atol=1e-4)
        assert np.all(np.diff(query_scores) <= 1e-6)


def test_a_part_of_another_model_is_refused_whatever_hash_it_carries(tmp_path):
    root = tmp_path / "videos"
    keys = videos(root, ["a.mp4", "b.mp4"])
    written = Part()
    for key, embedding in zip(keys, unit(2, EMBEDDING_DIM, 5)):
        written.add(key, embedding, unit(3, PROJECTION_DIM, 6), np.arange(3.0))
    parts_dir = tmp_path / "parts"
    parts_dir.mkdir()
    path = write_part(parts_dir, written, "b" * 64, 0)
    loaded = read_part(path, "b" * 64, EMBEDDING_DIM, PROJECTION_DIM)
    assert loaded.paths == ["a.mp4", "b.mp4"]
    for other in ("a" * 64, "b" * 63, "B" * 64, ""):
        with pytest.raises(ValueError, match="written with another model"):
            read_part(path, other, EMBEDDING_DIM, PROJECTION_DIM)

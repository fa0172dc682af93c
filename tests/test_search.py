"""Video search: the indexing command on a real folder (recursive, unreadable files, resume), its ranking against
the model's `logits_per_text`, the best-matching moment against an independent computation, and two processes
with `accelerate launch`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clip2video.apps.search import VideoIndex
from clip2video.apps.search.query_videos import search_texts
from clip2video.apps.search.video_index import exact_top_k
from clip2video.modeling_clip2video import CLIP2VideoModel
from tiny_checkpoint import COLOURS, save_tiny_checkpoint, tiny_processor, write_video


REPO = Path(__file__).resolve().parents[1]
QUERIES = ["a red square slides to the right", "green", "a blue box on grey", "a dog barks"]


def run_indexer(*args, launcher=(), env=None) -> str:
    command = [*launcher] if launcher else [sys.executable]
    command += ["-m", "clip2video.apps.search.index_videos", *map(str, args)]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **(env or {})}
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search")
    checkpoint = save_tiny_checkpoint(folder / "checkpoint")
    videos = folder / "videos"
    (videos / "nested" / "deeper").mkdir(parents=True)
    write_video(videos / "red.mp4", COLOURS["red"], num_frames=30)
    write_video(videos / "green.mp4", COLOURS["green"], num_frames=20, moving=False)
    write_video(videos / "nested" / "blue.mp4", COLOURS["blue"], num_frames=25)
    write_video(videos / "nested" / "deeper" / "yellow.mp4", COLOURS["yellow"], num_frames=40)
    write_video(videos / "nested" / "short.mp4", (200, 200, 200), num_frames=3)
    (videos / "nested" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    (videos / "notes.txt").write_text("not a video, not listed")
    index_dir = folder / "index"
    output = run_indexer(
        "--model", checkpoint, "--videos", videos, "--index_dir", index_dir, "--batch_size", 2, "--save_every", 2
    )
    return folder, checkpoint, videos, index_dir, output


@pytest.fixture(scope="module")
def model_and_processor(collection):
    _, checkpoint, *_ = collection
    return CLIP2VideoModel.from_pretrained(checkpoint).eval(), tiny_processor()


def test_indexes_recursively_and_reports_unreadable_files(collection):
    _, _, videos, index_dir, output = collection
    index = VideoIndex(index_dir)
    assert index.table["path"] == [
        "green.mp4", "nested/blue.mp4", "nested/deeper/yellow.mp4", "nested/short.mp4", "red.mp4"
    ]
    assert "6 videos" in output and "Skipped 1 unreadable file" in output and "nested/broken.mp4" in output
    unreadable = json.loads((index_dir / "unreadable.json").read_text())
    assert list(unreadable) == ["nested/broken.mp4"]
    assert str(videos / "nested" / "broken.mp4") in unreadable["nested/broken.mp4"]
    assert index.metadata["num_videos"] == 5 and index.metadata["video_root"] == str(videos)
    # 3 parts of at most --save_every=2 videos: what a resumed run starts from.
    assert len(list((index_dir / "parts").glob("*.parquet"))) == 3


@pytest.mark.parametrize("vector_index", ["faiss", "exact"])
def test_ranking_equals_the_models_logits_per_text(collection, model_and_processor, vector_index):
    _, _, videos, index_dir, _ = collection
    model, processor = model_and_processor
    index = VideoIndex(index_dir)
    if vector_index == "faiss":
        pytest.importorskip("faiss")
        assert index.uses_faiss
    else:
        index.uses_faiss, index._embeddings = False, np.asarray(index.table["embedding"], np.float32)
    paths = index.table["path"]
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


def test_best_moment_is_the_frame_closest_to_the_caption(collection, model_and_processor):
    _, _, videos, index_dir, _ = collection
    model, processor = model_and_processor
    hits = search_texts(VideoIndex(index_dir), model, processor, QUERIES[:1], top_k=5)[0]
    with torch.no_grad():
        text = processor(text=QUERIES[:1], return_tensors="pt")
        caption = model.get_text_features(**text)[0, : model.config.projection_dim]
        caption = caption / caption.norm()
        for hit in hits:
            video = processor(videos=[str(videos / hit.path)], return_tensors="pt", return_timestamps=True)
            frames = model.get_frame_features(video["pixel_values_videos"], video["video_mask"].bool())[0]
            real = int(video["video_mask"].sum())
            similarities = torch.nn.functional.normalize(frames[:real], dim=-1) @ caption
            best = int(similarities.argmax())
            assert hit.moment_seconds == pytest.approx(video["video_timestamps"][0, best].item())
            assert hit.moment_similarity == pytest.approx(similarities[best].item(), abs=1e-5)


def test_resumes_and_follows_changes(collection, tmp_path):
    _, checkpoint, videos, index_dir, _ = collection
    shutil.copytree(videos, tmp_path / "videos")
    shutil.copytree(index_dir, tmp_path / "index")
    videos, index_dir = tmp_path / "videos", tmp_path / "index"
    parts_before = set((index_dir / "parts").glob("*.parquet"))
    embedding_before = dict(zip(VideoIndex(index_dir).table["path"], VideoIndex(index_dir).table["embedding"]))

    # Copies keep size and mtime (copytree uses copy2): nothing to redo but the unreadable file.
    write_video(videos / "nested" / "new.mp4", (20, 200, 200), num_frames=15)
    (videos / "green.mp4").unlink()
    write_video(videos / "red.mp4", COLOURS["blue"], num_frames=12)  # changed content: indexed again
    output = run_indexer("--model", checkpoint, "--videos", videos, "--index_dir", index_dir)
    assert "6 videos" in output and "3 already indexed, 3 to index" in output, output
    assert set((index_dir / "parts").glob("*.parquet")) > parts_before

    index = VideoIndex(index_dir)
    assert index.table["path"] == [
        "nested/blue.mp4", "nested/deeper/yellow.mp4", "nested/new.mp4", "nested/short.mp4", "red.mp4"
    ]
    embedding_after = dict(zip(index.table["path"], index.table["embedding"]))
    assert embedding_after["nested/blue.mp4"] == embedding_before["nested/blue.mp4"]
    assert embedding_after["red.mp4"] != pytest.approx(embedding_before["red.mp4"], abs=1e-3)
    assert list(json.loads((index_dir / "unreadable.json").read_text())) == ["nested/broken.mp4"]


def test_exact_top_k_orders_ties_by_index():
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]], np.float32)
    scores, indices = exact_top_k(embeddings, np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), k=3)
    assert indices.tolist() == [[0, 2, 3], [1, 3, 0]]
    assert scores[0].tolist() == pytest.approx([1.0, 1.0, 0.6])


@pytest.mark.slow
def test_two_processes_with_accelerate_launch_give_the_same_index(collection, tmp_path):
    _, checkpoint, videos, index_dir, _ = collection
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    launcher = [
        accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--main_process_port", "29531",
    ]
    output = run_indexer(
        "--model", checkpoint, "--videos", videos, "--index_dir", tmp_path / "index", "--batch_size", 2,
        launcher=launcher, env={"OMP_NUM_THREADS": "1"},
    )
    assert "on 2 process(es)" in output
    parts = list((tmp_path / "index" / "parts").glob("*.parquet"))
    assert {part.name.split("-")[1] for part in parts} == {"000", "001"}  # both processes wrote their share
    two, one = VideoIndex(tmp_path / "index").table, VideoIndex(index_dir).table
    assert two["path"] == one["path"]
    np.testing.assert_allclose(np.asarray(two["embedding"]), np.asarray(one["embedding"]), rtol=0, atol=1e-5)
    assert json.loads((tmp_path / "index" / "unreadable.json").read_text()).keys() == {"nested/broken.mp4"}

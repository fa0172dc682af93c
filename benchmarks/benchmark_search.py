"""Cost of video search: indexing a folder of videos, and searching stored embeddings.

    python benchmarks/benchmark_search.py                       # 100 videos, 10^4 and 10^6 vectors
    python benchmarks/benchmark_search.py --num_videos 20 --vectors 10000

1. Indexing: writes `--num_videos` synthetic videos (`--video_seconds` long, 320x240 at 30 fps, H.264, like MSR-VTT
   clips), then times `python -m clip2video.apps.search.index_videos` (model loading included) on them with a model of the
   paper's size (CLIP ViT-B/32 towers, TDB, temporal transformer, TAB; randomly initialised: the cost does not depend
   on the weights) or `--model`, with the paper's sampling (2.5 fps, at most 12 frames, 224 px).
2. Search: random unit vectors of the retrieval embedding's size (1024 = 2 x 512 with TAB) stand in for `--vectors`
   stored videos; times one query (top 10) against them with FAISS `IndexFlatIP` (what the index uses when faiss is
   installed) and with the exact numpy fallback, and the text tower's time to embed one query.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from clip2video.apps.search.video_index import exact_top_k  # noqa: E402
from clip2video.modeling_clip2video import CLIP2VideoConfig, CLIP2VideoModel  # noqa: E402
from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_videos", type=int, default=100)
    parser.add_argument("--video_seconds", type=float, default=10.0)
    parser.add_argument("--model", default=None, help="checkpoint to index with (default: paper-size, random)")
    parser.add_argument("--num_processes", type=int, default=1, help="indexing processes (accelerate launch)")
    parser.add_argument("--vectors", type=int, nargs="+", default=[10**4, 10**6], help="stored vectors to search")
    parser.add_argument("--dim", type=int, default=1024, help="retrieval embedding size")
    parser.add_argument("--queries", type=int, default=50, help="timed queries per measurement")
    parser.add_argument("--skip_indexing", action="store_true")
    return parser.parse_args()


def write_synthetic_video(path: Path, seconds: float, fps: int = 30, width: int = 320, height: int = 240, seed=0):
    """A textured scene panning sideways with a moving square: enough motion and detail for a realistic encode."""
    rng = np.random.default_rng(seed)
    scene = rng.integers(0, 256, (height, width * 2, 3), dtype=np.uint8)
    gradient = np.linspace(0, 190, width * 2)[None, :, None]
    scene = np.clip(scene.astype(np.int16) // 4 + gradient, 0, 255).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(int(seconds * fps)):
            offset = index % width
            frame = np.ascontiguousarray(scene[:, offset : offset + width])
            top = (index * 3) % (height - 60)
            frame[top : top + 60, 100:160] = (230, 30, 30)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def paper_size_checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    CLIP2VideoModel(CLIP2VideoConfig()).eval().save_pretrained(folder)
    CLIP2VideoProcessor(video_processor=CLIP2VideoVideoProcessor(), tokenizer=offline_clip_tokenizer()).save_pretrained(
        folder
    )
    return folder


def benchmark_indexing(args, workdir: Path):
    videos = workdir / "videos"
    videos.mkdir()
    started = time.perf_counter()
    for index in range(args.num_videos):
        write_synthetic_video(videos / f"video{index:04d}.mp4", args.video_seconds, seed=index)
    print(f"wrote {args.num_videos} videos of {args.video_seconds:.0f} s in {time.perf_counter() - started:.0f} s")
    model = args.model or str(paper_size_checkpoint(workdir / "checkpoint"))
    command = [sys.executable]
    if args.num_processes > 1:
        command += ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(args.num_processes),
                    "--num_machines", "1", "--mixed_precision", "no"]
    command += ["-m", "clip2video.apps.search.index_videos", "--model", model, "--videos", str(videos),
                "--index_dir", str(workdir / "index")]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=environment, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    print(
        f"indexing {args.num_videos} videos x {args.video_seconds:.0f} s on {args.num_processes} process(es), "
        f"{torch.get_num_threads()} CPU threads available: {seconds:.1f} s ({seconds / args.num_videos:.2f} s/video, "
        "model loading included)"
    )
    return model


def random_unit_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = np.empty((count, dim), np.float32)
    for start in range(0, count, 100_000):  # in chunks: 10^6 x 1024 floats are 4 GB already
        chunk = rng.standard_normal((min(100_000, count - start), dim), dtype=np.float32)
        vectors[start : start + len(chunk)] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return vectors


def median_milliseconds(function, queries: np.ndarray) -> float:
    function(queries[:1])  # warm-up
    timings = []
    for query in queries:
        started = time.perf_counter()
        function(query[None])
        timings.append(time.perf_counter() - started)
    return 1000 * statistics.median(timings)


def benchmark_search(args):
    queries = random_unit_vectors(args.queries, args.dim, seed=1)
    try:
        import faiss
    except ImportError:
        faiss = None
    for count in args.vectors:
        stored = random_unit_vectors(count, args.dim, seed=0)
        results = []
        if faiss is not None:
            index = faiss.IndexFlatIP(args.dim)
            index.add(stored)
            results.append(f"FAISS IndexFlatIP {median_milliseconds(lambda q: index.search(q, 10), queries):.2f} ms")
            del index
        results.append(f"exact numpy {median_milliseconds(lambda q: exact_top_k(stored, q, 10), queries):.2f} ms")
        print(f"query latency, {count:.0e} stored vectors of {args.dim}, top 10 (median of {args.queries}): "
              + ", ".join(results))


@torch.no_grad()
def benchmark_text_encoding(model_path: str | None, repeats: int = 20):
    model = (
        CLIP2VideoModel.from_pretrained(model_path) if model_path else CLIP2VideoModel(CLIP2VideoConfig())
    ).eval()
    processor = CLIP2VideoProcessor(video_processor=CLIP2VideoVideoProcessor(), tokenizer=offline_clip_tokenizer())
    timings = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        inputs = processor(text=["a man is playing the guitar on a stage"], return_tensors="pt")
        model.get_text_features(**inputs)
        timings.append(time.perf_counter() - started)
    print(f"embedding one query (tokenizer + text tower, paper size): {1000 * statistics.median(timings[1:]):.1f} ms")


def main():
    args = parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as workdir:
        model = None if args.skip_indexing else benchmark_indexing(args, Path(workdir))
        benchmark_text_encoding(model)
    benchmark_search(args)


if __name__ == "__main__":
    main()

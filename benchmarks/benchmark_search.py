"""Cost of video search at scale: the approximate index's recall and latency, and indexing against the model's rate.

    python benchmarks/benchmark_search.py                                   # 10^5 and 10^6 vectors, 16 videos
    python benchmarks/benchmark_search.py --vectors 100000 --skip_indexing  # one size, search only

1. Search. `--vectors` stored embeddings of `--dim` values (1024 = 2 x 512 with the Temporal Alignment Block) that
   look like real ones: videos fall in `--topics` topics of Zipf-distributed sizes, all embeddings share a common
   direction (CLIP's narrow cone) and queries sit in their own cone (the text-video modality gap), so neighbours are
   close and many. They are written as a real index generation (`write_generation`: float16 storage when its measured
   error bound is < 1e-3, IVF with 8-bit scalar quantisation, checksums) and opened with `VideoIndex`. Reported: build
   time, peak memory, file sizes; for each `--nprobe`, recall@10 against exact float32 search (the model's own
   ranking) and one-query latency (median, p95); batched latency; exact search of the same index; HNSW at
   `--hnsw_up_to` vectors and below. The float16 error of the re-ranked scores is measured against float32.
2. Indexing. Writes `--num_videos` synthetic videos (`--video_seconds` long, 320x240 at 30 fps, H.264, like MSR-VTT
   clips) and compares the model's own `get_video_features` rate on pre-decoded frames (batches of `--batch_size`)
   with `python -m clip2video.apps.search.index_videos` (decoding in worker processes; its own videos/s, model loading
   excluded), measured model / indexer / model so a busy machine slows both alike. Model of the paper's size (CLIP
   ViT-B/32 towers, TDB, temporal transformer, TAB; random weights: the cost does not depend on them) or `--model`.
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from transformers import AutoModel, AutoProcessor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from clip2video.apps.search.index_build import (  # noqa: E402
    GenerationVideos, IndexSpec, RecallTooLowError, VectorIndexOptions, write_generation,
)
from clip2video.apps.search.video_index import SearchParameters, VideoIndex, exact_top_k  # noqa: E402
from clip2video.modeling_clip2video import CLIP2VideoConfig, CLIP2VideoModel  # noqa: E402
from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer  # noqa: E402


CHUNK = 65_536


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, nargs="+", default=[10**5, 10**6], help="stored embeddings to search")
    parser.add_argument("--dim", type=int, default=1024, help="retrieval embedding size")
    parser.add_argument("--topics", type=int, default=1000, help="topics the stored videos fall in")
    parser.add_argument("--queries", type=int, default=200, help="timed single queries per setting")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64], help="IVF lists searched")
    parser.add_argument("--candidates", type=int, default=256, help="videos re-scored exactly per query")
    parser.add_argument(
        "--index_types", nargs="+", choices=("ivf", "pq", "hnsw", "exact", "auto"), default=["ivf", "hnsw"],
        help="auto: what index_videos builds (calibrated with text-like queries: IVF; a PQ scan, then HNSW, where IVF "
        "stays below 0.99; refused where all do); pq: every video's 4-bit PQ code scanned, candidates re-scored",
    )
    parser.add_argument(
        "--approximate_above", type=int, default=None, help="with --index_types auto: videos above which it is approximate"
    )
    parser.add_argument("--hnsw_up_to", type=int, default=10**5, help="build HNSW only up to this many vectors")
    parser.add_argument(
        "--hnsw_ef_construction", type=int, default=VectorIndexOptions.hnsw_ef_construction, help="HNSW build breadth"
    )
    parser.add_argument(
        "--store", nargs="+", choices=("file", "milvus"), default=["file"],
        help="stores to compare side by side: the file index (--index_types) and Milvus Lite (--milvus_index)",
    )
    parser.add_argument("--milvus_index", default="FLAT", choices=("FLAT", "IVF_FLAT", "HNSW"))
    parser.add_argument("--num_videos", type=int, default=16)
    parser.add_argument("--indexing_repeats", type=int, default=1, help="indexer runs, each between two model runs")
    parser.add_argument("--video_seconds", type=float, default=10.0)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--model", default=None, help="checkpoint to index with (default: paper-size, random)")
    parser.add_argument("--skip_indexing", action="store_true")
    parser.add_argument("--skip_search", action="store_true")
    parser.add_argument(
        "--work_dir", default=None,
        help="keep the built indexes here (default: a temporary folder, removed); an index this folder already holds "
        "for the same size, type and collection is opened instead of built again, so that a build of an hour can be "
        "measured again when the machine is quiet",
    )
    return parser.parse_args()


def load() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ----------------------------------------------------------------------------------------------------------------
# Realistic embeddings
# ----------------------------------------------------------------------------------------------------------------


class Collection:
    """Deterministic embeddings of `count` videos in chunks (regenerated, never all in memory), and text queries.

    Like real embeddings they have far fewer degrees of freedom than dimensions: a vector is a shared cone
    direction (video or text: the modality gap) + one of `topics` topic centres (Zipf-distributed sizes) + one of 16
    sub-topic offsets of that topic + a variation in a 32-dimensional subspace + a little isotropic noise,
    normalised. Same-topic cosines come out around 0.6-0.8, others around 0.2-0.3, as for CLIP embeddings.
    """

    def __init__(
        self, count: int, dim: int, topics: int, seed: int = 0, subtopics: int = 16, rank: int = 32,
        workdir: Path | None = None,
    ):
        rng = np.random.default_rng(seed)
        self.count, self.dim, self.seed = count, dim, seed
        unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
        self.video_cone, self.text_cone = unit(rng.standard_normal((2, dim))).astype(np.float32)
        self.centres = unit(rng.standard_normal((topics, dim))).astype(np.float32)
        # The sub-topic offsets (topics x 16 x dim) are drawn at once when small; up to 2 GiB (20,000 topics: 1.3
        # GB) they go to a memory-mapped file in `workdir`, drawn in blocks of topics from the same stream (the same
        # numbers as drawn at once); beyond, they are not stored at all (10^5 topics would take 6.5 GB): each is
        # drawn when a chunk needs it, from its own stream (seed, topic, sub-topic), so memory and disk stay
        # O(chunk) whatever the topic count.
        shape, size = (topics, subtopics, dim), topics * subtopics * dim * 4
        self.num_subtopics = subtopics
        if size <= 256 * 2**20 or (workdir is None and size <= 2 * 2**30):
            self.subtopics = unit(rng.standard_normal(shape)).astype(np.float32)
        elif size > 2 * 2**30:
            self.subtopics = None
        else:
            self.subtopics = np.lib.format.open_memmap(workdir / f"subtopics-{seed}-{topics}.npy", "w+", np.float32, shape)
            block = max(1, (64 * 2**20) // (subtopics * dim * 8))
            for start in range(0, topics, block):
                stop = min(start + block, topics)
                self.subtopics[start:stop] = unit(rng.standard_normal((stop - start, subtopics, dim)))
            self.subtopics.flush()
        self.basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0].T.astype(np.float32)  # (rank, dim)
        popularity = 1.0 / np.arange(1, topics + 1) ** 0.8
        self.popularity = popularity / popularity.sum()

    def _sample(self, rng, count: int, cone: np.ndarray) -> np.ndarray:
        topics = rng.choice(len(self.centres), count, p=self.popularity)
        subtopics = rng.integers(0, self.num_subtopics, count)
        variation = rng.standard_normal((count, len(self.basis)), dtype=np.float32) @ self.basis
        noise = rng.standard_normal((count, self.dim), dtype=np.float32)
        vectors = (
            0.7 * cone
            + self.centres[topics]
            + 0.5 * self._offsets(topics, subtopics)
            + (0.6 / np.sqrt(len(self.basis))) * variation
            + (0.25 / np.sqrt(self.dim)) * noise
        )
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def _offsets(self, topics: np.ndarray, subtopics: np.ndarray) -> np.ndarray:
        if self.subtopics is not None:
            return self.subtopics[topics, subtopics]
        pairs, inverse = np.unique(topics * self.num_subtopics + subtopics, return_inverse=True)
        offsets = np.stack(
            [np.random.default_rng([self.seed, 1, int(pair)]).standard_normal(self.dim, np.float32) for pair in pairs]
        )
        return (offsets / np.linalg.norm(offsets, axis=1, keepdims=True))[inverse]

    def chunks(self):
        for index, start in enumerate(range(0, self.count, CHUNK)):
            rng = np.random.default_rng([self.seed, index])
            yield self._sample(rng, min(CHUNK, self.count - start), self.video_cone)

    def queries(self, count: int) -> np.ndarray:
        return self._sample(np.random.default_rng([self.seed, 10**6]), count, self.text_cone)

    def exact_top_k(self, queries: np.ndarray, k: int) -> np.ndarray:
        """The float32 top-k rows: the ranking the model's own embeddings give."""
        best_scores = np.full((len(queries), 0), -np.inf, np.float32)
        best_rows = np.zeros((len(queries), 0), np.int64)
        start = 0
        for block in self.chunks():
            scores, rows = exact_top_k(block, queries, k)
            best_scores = np.concatenate([best_scores, scores], axis=1)
            best_rows = np.concatenate([best_rows, rows + start], axis=1)
            order = np.lexsort((best_rows, -best_scores), axis=1)[:, :k]
            best_scores, best_rows = np.take_along_axis(best_scores, order, 1), np.take_along_axis(best_rows, order, 1)
            start += len(block)
        return best_rows


def build_index(
    collection: Collection, folder: Path, index_type: str, nprobe: int | None, approximate_above: int | None = None,
    ef_construction: int = VectorIndexOptions.hnsw_ef_construction,
) -> tuple[VideoIndex, float]:
    count = collection.count
    started = time.perf_counter()
    sizes = [min(CHUNK, count - start) for start in range(0, count, CHUNK)]  # not generated again for their sizes
    videos = GenerationVideos(
        [(f"v{i:09d}.mp4", 0, 0) for i in range(count)], collection.chunks, np.ones(count, np.int32),
        lambda: ((np.zeros((size, 8), np.float16), np.zeros(size)) for size in sizes),
    )
    write_generation(
        folder, IndexSpec({"name": "benchmark", "hash": "0" * 32}, 100.0, collection.dim, 8, folder), videos,
        VectorIndexOptions(
            index_type=index_type, nprobe=None if index_type == "auto" else nprobe, hnsw_ef_construction=ef_construction,
            **({"approximate_above": approximate_above} if approximate_above is not None else {}),
        ),
    )
    return VideoIndex(folder), time.perf_counter() - started


def latencies_ms(function, queries: np.ndarray) -> tuple[float, float]:
    function(queries[:1])  # warm-up
    timings = []
    for query in queries:
        started = time.perf_counter()
        function(query[None])
        timings.append(1000 * (time.perf_counter() - started))
    return statistics.median(timings), float(np.percentile(timings, 95))


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def benchmark_search(args, workdir: Path):
    for count in args.vectors:
        collection = Collection(count, args.dim, args.topics, workdir=workdir)
        queries = collection.queries(args.queries)
        started = time.perf_counter()
        truth = collection.exact_top_k(queries, 10)
        truth_seconds = time.perf_counter() - started
        if "milvus" in args.store:
            benchmark_milvus(args, collection, queries, truth, workdir)
        if "file" not in args.store:
            continue
        index_types = [t for t in args.index_types if t != "hnsw" or count <= args.hnsw_up_to]
        for index_type in index_types:
            build = {"topics": args.topics, "nprobe": args.nprobe[0], "approximate_above": args.approximate_above,
                     "hnsw_ef_construction": args.hnsw_ef_construction}
            folder = workdir / (f"{index_type}-{count}-" + "-".join(f"{k}{v}" for k, v in build.items()))
            if args.work_dir is not None and (folder / "index.json").is_file():
                index, build_seconds = VideoIndex(folder), float("nan")
                print(f"\n(opened the index built earlier in {folder})")
            else:
                folder.mkdir()
                try:
                    index, build_seconds = build_index(
                        collection, folder, index_type, args.nprobe[0], args.approximate_above, args.hnsw_ef_construction
                    )
                except RecallTooLowError as error:
                    print(f"\n{count:.0e} x {args.dim} {index_type}: refused ({load()}): {error}")
                    continue
            chosen = index.index_type
            sizes = {key: (folder / name).stat().st_size / 2**20 for key, name in index.metadata["files"].items() if name}
            print(
                f"\n{count:.0e} x {args.dim} {index_type}: built in {build_seconds:.0f} s ({load()}), peak RSS so far "
                f"{peak_rss_gib():.2f} GiB; storage {index.metadata['embedding_dtype']} (float16 error bound "
                f"{index.metadata['float16_error_bound']:.2e}); MiB on disk: "
                + ", ".join(f"{key} {size:.0f}" for key, size in sizes.items())
                + f"; settings {json.dumps(index.metadata['vector_index'])}"
            )
            settings = [SearchParameters(nprobe=n, candidates=args.candidates) for n in args.nprobe]
            if index_type == "auto":
                settings = [SearchParameters(candidates=args.candidates)]  # the settings calibrated at build
            elif index_type == "hnsw":
                settings = [SearchParameters(ef_search=e, candidates=args.candidates) for e in (256, 512)]
            elif index_type == "pq":  # the calibrated candidates, then twice and four times as many
                calibrated = index.metadata["vector_index"]["candidates"]
                settings = [SearchParameters(candidates=c) for c in (calibrated, 2 * calibrated, 4 * calibrated)]
            elif index_type == "exact":
                settings = [SearchParameters()]
            for parameters in settings:
                _, rows = index.nearest(queries, 10, parameters)
                scores, _ = index.nearest(queries[:1], 10, parameters)
                median, p95 = latencies_ms(lambda q: index.nearest(q, 10, parameters), queries)
                batch = min(100, len(queries))
                started = time.perf_counter()
                index.nearest(queries[:batch], 10, parameters)
                batched = 1000 * (time.perf_counter() - started) / batch
                vector_index = index.metadata["vector_index"]
                knob = {
                    "ivf": f"nprobe {parameters.nprobe or vector_index.get('nprobe')}", "pq": "pq scan",
                    "hnsw": f"efSearch {parameters.ef_search or vector_index.get('ef_search')}", "exact": "exact",
                }[chosen]
                print(
                    f"  {knob:>12}, {index.rescored_candidates(parameters)} candidates: recall@10 {recall(rows, truth):.4f}; one query "
                    f"median {median:.2f} ms, p95 {p95:.2f} ms; batched ({batch}) {batched:.2f} ms/query  ({load()})"
                )
            # float16 re-ranking error against the float32 scores of the same (query, video) pairs.
            scores, rows = index.nearest(queries, 10, settings[-1])
            pair_query, pair_row = np.repeat(np.arange(len(queries)), rows.shape[1]), rows.reshape(-1)
            float32 = np.empty(len(pair_row), np.float32)
            start = 0
            for block in collection.chunks():
                inside = (pair_row >= start) & (pair_row < start + len(block))
                float32[inside] = 100.0 * np.einsum(
                    "ij,ij->i", block[pair_row[inside] - start], queries[pair_query[inside]]
                )
                start += len(block)
            error = np.abs(scores.reshape(-1) - float32)
            relative = error / np.abs(float32)
            print(
                f"  {index.metadata['embedding_dtype']} storage: max |score error| vs float32 {error.max():.2e} (bound {100 * index.metadata['float16_error_bound']:.2e}), "
                f"max relative to the score {relative.max():.2e}"
            )
            if chosen != "exact":  # the same float16 memory map, scanned exactly
                exact_queries = queries[: max(3, args.queries // 40)]
                median, p95 = latencies_ms(lambda q: index.nearest(q, 10, SearchParameters(exact=True)), exact_queries)
                print(
                    f"  exact search of the same index (float16 memory map, exact_top_k): median {median:.1f} ms, p95 "
                    f"{p95:.1f} ms; exact float32 truth over {len(queries)} queries took {truth_seconds:.0f} s"
                )
            del index
            if args.work_dir is None:
                for path in folder.iterdir():
                    path.unlink()
                folder.rmdir()


def benchmark_milvus(args, collection: Collection, queries: np.ndarray, truth: np.ndarray, workdir: Path):
    """The same vectors in a Milvus Lite collection (one row per video, as `index_videos --store milvus` writes),
    searched through `MilvusVideoIndex` (candidates re-scored exactly, as the file index)."""
    from clip2video.apps.search.index_build import LoadedPart
    from clip2video.apps.search.milvus_store import MilvusIndexWriter, MilvusOptions, MilvusVideoIndex, disconnect

    uri = str(workdir / f"milvus-{collection.count}.db")
    started = time.perf_counter()
    writer = MilvusIndexWriter(
        MilvusOptions(uri, "benchmark", index_type=args.milvus_index),
        IndexSpec({"name": "benchmark", "hash": "0" * 32}, 100.0, collection.dim, 8, workdir), 1, VectorIndexOptions(),
    )
    start = 0
    for block in collection.chunks():
        count = len(block)
        writer.upsert(LoadedPart(
            name="", paths=[f"v{i:09d}.mp4" for i in range(start, start + count)], sizes=np.zeros(count, np.int64),
            mtimes_ns=np.zeros(count, np.int64), embeddings=block, frame_offsets=np.arange(count + 1),
            frames=np.zeros((count, 8), np.float32), frame_times=np.zeros(count),
        ))
        start += count
    writer.flush()
    index = MilvusVideoIndex(uri, "benchmark", client=writer.client)
    build_seconds = time.perf_counter() - started
    print(
        f"\n{collection.count:.0e} x {collection.dim} Milvus Lite {args.milvus_index}: inserted in {build_seconds:.0f} s "
        f"({load()}), peak RSS so far {peak_rss_gib():.2f} GiB"
    )

    def rows(paths):
        return np.array([[int(p[1:10]) for p in line] for line in paths])

    parameters = SearchParameters(candidates=args.candidates)
    _, found = index.nearest(queries, 10, parameters)
    median, p95 = latencies_ms(lambda q: index.nearest(q, 10, parameters), queries)
    batch = min(100, len(queries))
    started = time.perf_counter()
    index.nearest(queries[:batch], 10, parameters)
    batched = 1000 * (time.perf_counter() - started) / batch
    print(
        f"  {args.candidates} candidates: recall@10 {recall(rows(found), truth):.4f}; one query median {median:.2f} ms, "
        f"p95 {p95:.2f} ms; batched ({batch}) {batched:.2f} ms/query  ({load()})"
    )
    disconnect(writer.client, uri)


# ----------------------------------------------------------------------------------------------------------------
# Indexing
# ----------------------------------------------------------------------------------------------------------------


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


@torch.no_grad()
def model_rate(model, batches: list[dict]) -> float:
    """Videos per second of `get_video_features` alone, on frames decoded beforehand."""
    model.get_video_features(**batches[0])  # warm-up
    started = time.perf_counter()
    for batch in batches:
        model.get_video_features(**batch)
    return sum(len(b["video_mask"]) for b in batches) / (time.perf_counter() - started)


def benchmark_indexing(args, workdir: Path):
    videos = workdir / "videos"
    videos.mkdir()
    for index in range(args.num_videos):
        write_synthetic_video(videos / f"video{index:04d}.mp4", args.video_seconds, seed=index)
    checkpoint = args.model or str(paper_size_checkpoint(workdir / "checkpoint"))
    # What the indexer loads: the checkpoint's own (remote) code.
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    paths = sorted(str(p) for p in videos.iterdir())
    started = time.perf_counter()
    decoded = [processor(videos=paths[i : i + args.batch_size], return_tensors="pt") for i in range(0, len(paths), args.batch_size)]
    decode_rate = len(paths) / (time.perf_counter() - started)
    batches = [{"pixel_values_videos": d["pixel_values_videos"], "video_mask": d["video_mask"]} for d in decoded]

    command = [
        sys.executable, "-m", "clip2video.apps.search.index_videos", "--model", checkpoint, "--videos", str(videos),
        "--batch_size", str(args.batch_size),
    ]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    rates = [model_rate(model, batches)]
    for attempt in range(args.indexing_repeats):
        index_dir = workdir / f"index{attempt}"
        result = subprocess.run(
            command + ["--index_dir", str(index_dir)], cwd=REPO, env=environment, capture_output=True, text=True,
            check=True,
        )
        match = re.search(r"embedded (\d+) videos in ([\d.]+) s \(([\d.]+) videos/s", result.stdout)
        indexer = float(match.group(3))
        rates.append(model_rate(model, batches))
        reference = (rates[-2] + rates[-1]) / 2
        print(
            f"indexing {args.num_videos} videos x {args.video_seconds:.0f} s, batch {args.batch_size}, "
            f"{torch.get_num_threads()} torch threads: model alone {rates[-2]:.2f} / {rates[-1]:.2f} videos/s "
            f"(get_video_features on pre-decoded frames), indexer {indexer:.2f} videos/s (decoding included) = "
            f"{indexer / reference:.2f}x the model ({load()}); decoding alone {decode_rate:.2f} videos/s"
        )


@torch.no_grad()
def benchmark_text_encoding(repeats: int = 20):
    model = CLIP2VideoModel(CLIP2VideoConfig()).eval()
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
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} threads, {load()}"
    )
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(args.work_dir or temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        if not args.skip_search:
            benchmark_search(args, workdir)
        if not args.skip_indexing:
            benchmark_text_encoding()
            benchmark_indexing(args, Path(temporary))


if __name__ == "__main__":
    main()

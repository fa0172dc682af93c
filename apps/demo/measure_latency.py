"""Query latency of the demo over an indexed collection: what the Search button runs (`app.respond`: the text
embedding, the search over the stored embeddings, the best frames read back from the files and the HTML), median of
`--repeats` different queries after indexing.

    python apps/demo/measure_latency.py                         # 120 synthetic test clips, synthetic-size model
    python apps/demo/measure_latency.py --model outputs/clip2video-synthetic \\
        --examples_dir outputs/data/synthetic/test/videos
    python apps/demo/measure_latency.py --random_model paper    # ViT-B/32-sized towers, random weights

Without `--examples_dir` the 120 clips of the synthetic test split are generated in a temporary folder. Without
`--model`, a randomly initialised model of `--random_model`'s size stands in: the time does not depend on the weights.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint folder (default: a random model, --random_model)")
    parser.add_argument("--random_model", choices=("synthetic", "paper"), default="synthetic")
    parser.add_argument("--examples_dir", default=None, help="default: the 120 synthetic test clips, generated")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--top_k", type=int, default=12)
    return parser.parse_args(argv)


def random_checkpoint(kind: str, folder: Path) -> Path:
    from clip2video.modeling_clip2video import CLIP2VideoConfig, CLIP2VideoModel
    from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer
    from clip2video.training.recipes import small_synthetic_config

    torch.manual_seed(0)
    config = small_synthetic_config(8, "clip2video") if kind == "synthetic" else CLIP2VideoConfig()
    size = config.vision_config.image_size
    video_processor = CLIP2VideoVideoProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, num_frames=config.num_frames
    )
    CLIP2VideoModel(config).eval().save_pretrained(folder)
    CLIP2VideoProcessor(video_processor=video_processor, tokenizer=offline_clip_tokenizer()).save_pretrained(folder)
    return folder


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="demo-latency-") as temporary:
        measure(args, Path(temporary))


def measure(args, workspace: Path) -> None:
    from clip2video.apps.demo.app import load_model, respond
    from clip2video.apps.demo.collection import VideoCollection, wait_until_ready
    from clip2video.training.synthetic import SyntheticConfig, all_captions, generate_synthetic_dataset

    load_before = os.getloadavg()[0]
    examples = args.examples_dir
    if examples is None:
        data = generate_synthetic_dataset(workspace / "data", SyntheticConfig(num_train_clips=1))
        examples = data / "test" / "videos"
    model_name = args.model or random_checkpoint(args.random_model, workspace / "model")
    model, processor = load_model(str(model_name), None, None)
    collection = VideoCollection(model, processor, {"examples": str(examples)}, workspace / "indexes")
    started = time.perf_counter()
    collection.start()
    wait_until_ready(collection, timeout=3600)
    indexing = time.perf_counter() - started
    [folder] = collection.folders
    if folder.state != "ready":
        raise SystemExit(f"indexing failed: {folder.message}")
    queries = [caption for caption, *_ in all_captions()][:: max(1, 120 // args.repeats)][: args.repeats]
    respond(collection, "query", "warm-up query", [], [], args.top_k)
    timings, searches = [], []
    for query in queries:
        begin = time.perf_counter()
        respond(collection, "query", query, [], [], args.top_k)
        timings.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        collection.search(query, [], args.top_k)
        searches.append(time.perf_counter() - begin)
    load = os.getloadavg()[0]
    print(f"model: {model_name} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters), "
          f"torch threads {torch.get_num_threads()}, {len(os.sched_getaffinity(0))} CPUs")
    print(f"collection: {len(collection)} videos under {examples}, indexed in {indexing:.1f} s")
    print(f"query (Search button: text embedding + search + best frames + HTML), top {args.top_k}, "
          f"{len(timings)} queries: median {1000 * statistics.median(timings):.1f} ms, "
          f"min {1000 * min(timings):.1f} ms, max {1000 * max(timings):.1f} ms")
    print(f"collection.search alone (text embedding + search; no pictures, no HTML): median "
          f"{1000 * statistics.median(searches):.1f} ms")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average (1 min) before / after: "
          f"{load_before:.2f} / {load:.2f}")


if __name__ == "__main__":
    sys.exit(main())

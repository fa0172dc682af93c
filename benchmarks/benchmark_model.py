"""Times CLIP2VideoModel.get_video_features at ViT-B/32 size on CPU.

    python benchmarks/benchmark_model.py [--threads 2] [--repeats 5] [--authors_code PATH]

Random weights (the paper's full model: TDB, temporal transformer, TAB), 224 px, 8 videos x 12 frames. Prints the
median seconds per batch in float32 and with `torch.autocast("cpu", dtype=torch.bfloat16)` (CLIP towers in bf16;
the model keeps its temporal heads and scores in float32), and how far the bf16 scores move from float32, relative
to the largest score. With `--authors_code` pointing at a checkout of the authors' repository (CryhanFang/CLIP2Video)
it also times their CLIP `encode_image` on the same frames, in the same process, for a fair comparison.
"""

import argparse
import contextlib
import platform
import statistics
import sys
import time

import torch

from clip2video.modeling_clip2video import CLIP2VideoConfig, CLIP2VideoModel


def interleaved_medians(candidates: dict, repeats: int) -> dict:
    """Median seconds of each candidate, timed in turns so that a busy machine slows them alike."""
    for fn in candidates.values():
        fn()  # warm-up: oneDNN builds its kernels on the first call
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(runs), runs) for name, runs in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--authors_code", help="a checkout of CryhanFang/CLIP2Video, to time their image encoder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = CLIP2VideoModel(CLIP2VideoConfig()).eval()  # ViT-B/32 sizes
    pixels = torch.randn(args.videos, args.frames, 3, 224, 224)
    mask = torch.ones(args.videos, args.frames, dtype=torch.long)
    input_ids = torch.randint(1, 49000, (16, 32))
    input_ids[:, 0], input_ids[:, -1] = 49406, 49407

    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"batch: {args.videos} videos x {args.frames} frames, 224 px, ViT-B/32 + TDB + temporal transformer + TAB")

    def encoder(context):
        def encode():
            with context():
                return model.get_video_features(pixels, mask).pooler_output

        return encode

    candidates = {
        "float32": encoder(contextlib.nullcontext),
        "bf16 autocast": encoder(lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
    }
    if args.authors_code:
        sys.path.insert(0, args.authors_code)
        from modules.module_clip import CLIP  # the authors' copy of OpenAI CLIP

        authors = CLIP(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12).float().eval()
        candidates["authors fp32 (encode_image only)"] = lambda: authors.encode_image(pixels.flatten(0, 1))
    with torch.inference_mode():
        medians = interleaved_medians(candidates, args.repeats)
        text = model.get_text_features(input_ids, torch.ones_like(input_ids)).pooler_output
        scores = {name: model.logit_scale.exp() * text @ candidates[name]().T for name in ("float32", "bf16 autocast")}
    for name, (median, runs) in medians.items():
        print(f"{name:32s} {median:6.2f} s per batch (runs: {', '.join(f'{t:.2f}' for t in runs)})")
    medians = {name: median for name, (median, _) in medians.items()}
    deviation = ((scores["bf16 autocast"] - scores["float32"]).abs().max() / scores["float32"].abs().max()).item()
    print(
        f"bf16 autocast: {medians['float32'] / medians['bf16 autocast']:.2f}x faster than float32; scores within "
        f"{deviation:.1e} of float32 (relative to the largest score)"
    )


if __name__ == "__main__":
    main()

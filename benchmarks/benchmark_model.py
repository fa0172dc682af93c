"""Times CLIP2VideoModel.get_video_features at ViT-B/32 size on CPU: float32, bf16 weights and bf16 autocast, next to
the authors' float32 image encoder, in one process.

    python benchmarks/benchmark_model.py [--threads 2] [--repeats 5] [--videos 8] [--frames 12] [--authors_code PATH]
                                         [--compile] [--no_bf16]

Random weights (the paper's full model: TDB, temporal transformer, TAB), 224 px, `--videos` x `--frames` frames.
Candidates, timed in turns so that a busy machine slows them alike (median seconds per batch):
    - float32: the model as built;
    - bf16 weights: the same weights saved and loaded with `from_pretrained(..., dtype=torch.bfloat16)` (the vision
      tower's linear layers in bf16; its embeddings and norms, the text tower, the temporal heads and `logit_scale`
      in float32, see docs/model.md);
    - bf16 autocast: the float32 model under `torch.autocast("cpu", dtype=torch.bfloat16)`;
      (`--no_bf16` leaves both bf16 paths out: on CPUs without native bf16, AVX2 only, they take 4-7x float32's time)
    - float32 compiled (with `--compile`): the same weights with the vision tower compiled in place for inference,
      `model.compile_vision_tower_for_inference()` (TorchInductor with freezing); its first call (compilation and one
      batch) is timed apart, with the number of batches after which the compilation has paid for itself;
    - authors fp32: with `--authors_code` pointing at a checkout of CryhanFang/CLIP2Video, their CLIP `encode_image`
      on the same frames (their video encoder's cost: the temporal modules add under 1% at this size).
For each path other than float32 it prints how far its retrieval scores (16 captions x the videos, text encoded by
the same path) move from float32, relative to the largest float32 score.
"""

import argparse
import contextlib
import math
import os
import platform
import statistics
import sys
import tempfile
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


def relative_deviation(scores: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest absolute score difference, relative to the largest absolute reference score."""
    return ((scores.float() - reference).abs().max() / reference.abs().max()).item()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--authors_code", help="a checkout of CryhanFang/CLIP2Video, to time their image encoder")
    parser.add_argument("--compile", action="store_true", help="also time float32 with the vision tower compiled for inference")
    parser.add_argument("--no_bf16", action="store_true", help="leave out the two bf16 paths (slow without native bf16)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = CLIP2VideoModel(CLIP2VideoConfig()).eval()  # ViT-B/32 sizes
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        bf16_model = None if args.no_bf16 else CLIP2VideoModel.from_pretrained(folder, dtype=torch.bfloat16).eval()
        if args.compile:
            compiled_model = CLIP2VideoModel.from_pretrained(folder).eval()
            compiled_model.compile_vision_tower_for_inference()
    pixels = torch.randn(args.videos, args.frames, 3, 224, 224)
    mask = torch.ones(args.videos, args.frames, dtype=torch.long)
    input_ids = torch.randint(1, 49000, (16, 32))
    input_ids[:, 0], input_ids[:, -1] = 49406, 49407

    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    print(f"batch: {args.videos} videos x {args.frames} frames, 224 px, ViT-B/32 + TDB + temporal transformer + TAB")
    paths = {"float32": (model, pixels, contextlib.nullcontext)}
    if bf16_model is not None:
        print(f"bf16 weights: model.dtype {bf16_model.dtype}, heads and logit_scale {bf16_model.logit_scale.dtype}")
        autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
        paths["bf16 weights"] = (bf16_model, pixels.bfloat16(), contextlib.nullcontext)
        paths["bf16 autocast"] = (model, pixels, autocast)
    if args.compile:
        paths["float32 compiled"] = (compiled_model, pixels, contextlib.nullcontext)

    def encoder(path_model, path_pixels, context):
        def encode():
            with context():
                return path_model.get_video_features(path_pixels, mask).pooler_output

        return encode

    candidates = {name: encoder(*path) for name, path in paths.items()}
    if args.authors_code:
        sys.path.insert(0, args.authors_code)
        from modules.module_clip import CLIP  # the authors' copy of OpenAI CLIP

        authors = CLIP(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12).float().eval()
        candidates["authors fp32 (encode_image)"] = lambda: authors.encode_image(pixels.flatten(0, 1))
    with torch.inference_mode():
        if args.compile:
            start = time.perf_counter()
            candidates["float32 compiled"]()
            compile_seconds = time.perf_counter() - start
        medians = interleaved_medians(candidates, args.repeats)
        scores = {}
        for name, (path_model, _, context) in paths.items():
            with context():
                text = path_model.get_text_features(input_ids, torch.ones_like(input_ids)).pooler_output
            scores[name] = path_model.logit_scale.exp() * text.float() @ candidates[name]().float().T
    for name, (median, runs) in medians.items():
        print(f"{name:28s} {median:6.2f} s per batch (runs: {', '.join(f'{t:.2f}' for t in runs)})")
    runs = {name: runs for name, (_, runs) in medians.items()}
    medians = {name: median for name, (median, _) in medians.items()}
    for name in list(paths)[1:]:
        print(
            f"{name}: {medians['float32'] / medians[name]:.2f}x faster than float32; scores within "
            f"{relative_deviation(scores[name], scores['float32']):.1e} of float32 (relative to the largest score)"
        )
    if args.compile:
        saved = medians["float32"] - medians["float32 compiled"]
        overhead = compile_seconds - medians["float32 compiled"]
        paid_back = f"after {max(1, math.ceil(overhead / saved))} batches" if saved > 0 else "never (not faster)"
        print(f"float32 compiled: first call {compile_seconds:.1f} s (compilation and one batch); pays for itself "
              f"{paid_back}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    if args.authors_code:
        # Each round's candidates ran back to back, so a round's ratio sees one load; the median of the rounds'
        # ratios is steadier than the ratio of the medians when the load changes between rounds.
        authors_runs = runs["authors fp32 (encode_image)"]
        for name in paths:
            ratios = [ours / theirs for ours, theirs in zip(runs[name], authors_runs)]
            print(
                f"{name} / authors fp32: {statistics.median(ratios):.3f} (median of the rounds' ratios: "
                f"{', '.join(f'{ratio:.3f}' for ratio in ratios)})"
            )


if __name__ == "__main__":
    main()

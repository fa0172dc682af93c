"""GPU check part: model (see gpu_check.py). `get_video_features` throughput in float32, bf16 weights and bf16
autocast, and how far the bf16 scores move from float32.

    PYTHONPATH=. python benchmarks/gpu_check.py --parts model     # on a CUDA machine, ViT-B/32, batch 64 x 12 frames
    python benchmarks/gpu_check_model.py --tiny --device cpu       # smoke check of this script on any machine

ViT-B/32 sizes with the paper's full model (TDB, temporal transformer, TAB), random weights, 224 px. The bf16
weights are the float32 model saved and loaded with `from_pretrained(..., dtype=torch.bfloat16)` (the vision
tower's linear layers in bf16; its embeddings and norms, the text tower, temporal heads and `logit_scale` in
float32). Float32 matmuls run in full float32 (TF32 off, PyTorch's default). Throughput is videos per second over
`--iterations` batches after two warm-up batches; the score difference is the largest |bf16 - float32| over 64
captions x the batch, relative to the largest float32 score. Expected to take about a minute on one H100/H200-class
GPU (not yet run on one; the budget of this part is 5 minutes).
"""

import argparse
import contextlib
import tempfile
import time

import torch

from clip2video.modeling_clip2video import CLIP2VideoConfig, CLIP2VideoModel


TINY = dict(
    projection_dim=64,
    text_config=dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_hidden_layers=2),
    vision_config=dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_hidden_layers=2,
                       image_size=32, patch_size=16),
    temporal_num_layers=1,
)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def videos_per_second(encode, batch_size: int, iterations: int, device: torch.device) -> float:
    for _ in range(2):  # warm-up: kernels are selected and compiled on the first calls
        encode()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        encode()
    _synchronize(device)
    return batch_size * iterations / (time.perf_counter() - start)


def run(
    device: str | None = None, tiny: bool = False, batch_size: int = 64, num_frames: int = 12, iterations: int = 10
) -> dict[str, float]:
    """Prints and returns the throughput of each path (videos/s) and each bf16 path's relative score difference."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if tiny:
        batch_size, num_frames, iterations = min(batch_size, 4), min(num_frames, 4), min(iterations, 2)
    torch.manual_seed(0)
    config = CLIP2VideoConfig(**TINY) if tiny else CLIP2VideoConfig()
    model = CLIP2VideoModel(config).eval()
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        bf16_model = CLIP2VideoModel.from_pretrained(folder, dtype=torch.bfloat16).eval().to(device)
    model.to(device)
    image_size = config.vision_config.image_size
    generator = torch.Generator(device="cpu").manual_seed(1)
    pixels = torch.randn(batch_size, num_frames, 3, image_size, image_size, generator=generator).to(device)
    mask = torch.ones(batch_size, num_frames, dtype=torch.long, device=device)
    input_ids = torch.randint(1, config.text_config.vocab_size - 2, (64, 32), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = config.text_config.vocab_size - 2, config.text_config.vocab_size - 1
    input_ids = input_ids.to(device)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    paths = {
        "float32": (model, pixels, contextlib.nullcontext),
        "bf16 weights": (bf16_model, pixels.bfloat16(), contextlib.nullcontext),
        "bf16 autocast": (model, pixels, autocast),
    }
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"model: {name}, batch {batch_size} videos x {num_frames} frames at {image_size} px, "
          f"{'tiny' if tiny else 'ViT-B/32'} sizes, random weights; bf16 model.dtype {bf16_model.dtype}")
    results, scores = {}, {}
    with torch.inference_mode():
        for path, (path_model, path_pixels, context) in paths.items():

            def encode():
                with context():
                    return path_model.get_video_features(path_pixels, mask).pooler_output

            results[f"{path} videos/s"] = videos_per_second(encode, batch_size, iterations, device)
            with context():
                text = path_model.get_text_features(input_ids, torch.ones_like(input_ids)).pooler_output
            scores[path] = (path_model.logit_scale.exp() * text.float() @ encode().float().T).cpu()
            print(f"  {path:14s} {results[f'{path} videos/s']:9.1f} videos/s", flush=True)
    reference = scores["float32"]
    for path in ("bf16 weights", "bf16 autocast"):
        difference = ((scores[path] - reference).abs().max() / reference.abs().max()).item()
        results[f"{path} relative score difference"] = difference
        speedup = results[f"{path} videos/s"] / results["float32 videos/s"]
        print(f"  {path}: {speedup:.2f}x float32; scores within {difference:.1e} of float32 (relative to the "
              f"largest score){'' if difference <= 1e-2 else '  ** above 1e-2 **'}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, 4 videos x 4 frames: a smoke check")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_frames", type=int, default=12)
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args()
    run(args.device, args.tiny, args.batch_size, args.num_frames, args.iterations)

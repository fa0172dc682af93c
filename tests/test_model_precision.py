"""bf16 paths of CLIP2VideoModel at ViT-B/32 size stay within 1e-2 of float32, and the model part of the GPU check
runs (tiny sizes, on CPU)."""

import sys
from pathlib import Path

import pytest
import torch

from clip2video.modeling_clip2video import CLIP2VideoConfig, CLIP2VideoModel


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def relative_deviation(scores: torch.Tensor, reference: torch.Tensor) -> float:
    return ((scores - reference).abs().max() / reference.abs().max()).item()


@pytest.mark.slow
def test_bf16_weights_and_autocast_stay_within_1e_2_of_float32_at_vit_b32_size(tmp_path):
    torch.manual_seed(0)
    model = CLIP2VideoModel(CLIP2VideoConfig()).eval()  # ViT-B/32 sizes, random weights
    model.save_pretrained(tmp_path)
    bf16 = CLIP2VideoModel.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert bf16.dtype == torch.bfloat16 and bf16.vision_model.encoder.layers[0].mlp.fc1.weight.dtype == torch.bfloat16
    generator = torch.Generator().manual_seed(1)
    # The sizes that matter are the towers' (ViT-B/32 at 224 pixels); two videos of four frames, one padded, and
    # four captions are enough to see bf16's rounding (the bf16 matmuls are slow on CPUs without bf16 units).
    pixels = torch.randn(2, 4, 3, 224, 224, generator=generator)
    mask = torch.tensor([[1] * 4, [1] * 2 + [0] * 2])
    input_ids = torch.randint(1, 49000, (4, 32), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = 49406, 49407
    attention_mask = torch.ones_like(input_ids)
    with torch.inference_mode():
        reference = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask)
        weights = bf16(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels.bfloat16(), video_mask=mask
        )
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask)
    for output in (weights, mixed):
        assert output.logits_per_text.dtype == torch.float32
        deviation = relative_deviation(output.logits_per_text, reference.logits_per_text)
        assert 0 < deviation < 1e-2  # the vision tower did run in bf16, and the scores stay close


def test_gpu_check_model_part_runs_at_tiny_size_on_cpu():
    import gpu_check_model

    results = gpu_check_model.run(device="cpu", tiny=True)
    for path in ("float32", "bf16 weights", "bf16 autocast"):
        assert results[f"{path} videos/s"] > 0
    for path in ("bf16 weights", "bf16 autocast"):
        assert 0 < results[f"{path} relative score difference"] < 1e-2

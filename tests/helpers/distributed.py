"""The model and the fixed global batch of the distributed tests: the scripts under tests/scripts/ compute on them in
several processes, the tests compute the same in one process and compare."""

import torch

from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.training.recipes import small_synthetic_config

GLOBAL_BATCH = 8
NUM_FRAMES = 4


def tiny_model() -> CLIP2VideoModel:
    """The small synthetic-data configuration, seeded: the same weights in every process."""
    torch.manual_seed(0)
    return CLIP2VideoModel(small_synthetic_config(NUM_FRAMES, "clip2video"))


def fixed_batch() -> dict[str, torch.Tensor]:
    """A global batch of `GLOBAL_BATCH` caption-video pairs: CLIP-vocabulary ids of 3 to 8 tokens, 2 to 4 real
    frames of 32 x 32 per video (padding frames zero)."""
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(3, 9, (GLOBAL_BATCH,), generator=generator)
    input_ids = torch.randint(1, 49406, (GLOBAL_BATCH, 10), generator=generator)
    attention_mask = (torch.arange(10) < lengths[:, None]).long()
    input_ids[:, 0] = 49406
    input_ids[torch.arange(GLOBAL_BATCH), lengths - 1] = 49407
    video_mask = (torch.arange(NUM_FRAMES) < torch.randint(2, NUM_FRAMES + 1, (GLOBAL_BATCH, 1), generator=generator)).long()
    pixels = torch.randn(GLOBAL_BATCH, NUM_FRAMES, 3, 32, 32, generator=generator) * video_mask[:, :, None, None, None]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values_videos": pixels, "video_mask": video_mask}

"""Tiny CLIP / CLIP2Video configurations and inputs shared by the model tests."""

import os
import subprocess
import sys
import textwrap

import torch
from transformers import CLIPConfig

from clip2video.modeling_clip2video import CLIP2VideoConfig

WIDTH = 128  # two heads of 64, as the authors derive heads from width
IMAGE_SIZE = 32
VOCAB_SIZE = 100
START, END = 98, 99

CLIP_SIZES = dict(
    projection_dim=WIDTH,
    text_config=dict(
        hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_attention_heads=2, num_hidden_layers=4,
        vocab_size=VOCAB_SIZE, max_position_embeddings=77, bos_token_id=START, eos_token_id=END, pad_token_id=0,
    ),
    vision_config=dict(
        hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_attention_heads=2, num_hidden_layers=2,
        image_size=IMAGE_SIZE, patch_size=16,
    ),
)

# The variants the authors' code supports, in this port's terms.
VARIANTS = {
    "mean_pooling": dict(
        temporal_pooling="mean", use_temporal_difference_block=False, difference_projection="none",
        use_temporal_alignment_block=False,
    ),
    "temporal_transformer": dict(
        use_temporal_difference_block=False, difference_projection="none", use_temporal_alignment_block=False
    ),
    "tdb_plain": dict(difference_projection="none", use_temporal_alignment_block=False),
    "tdb_mlp": dict(difference_projection="mlp", use_temporal_alignment_block=False),
    "tdb_attention": dict(difference_projection="attention", use_temporal_alignment_block=False),
    "tab": dict(
        use_temporal_difference_block=False, difference_projection="none", alignment_temporal_encoder="transformer"
    ),
    "tab_no_encoder": dict(alignment_temporal_encoder="none"),
    "tab_tdb": dict(),
    "tab_tdb_7_centres": dict(alignment_num_centers=7),
}


def tiny_clip_config() -> CLIPConfig:
    return CLIPConfig(**CLIP_SIZES)


def tiny_config(**overrides) -> CLIP2VideoConfig:
    return CLIP2VideoConfig(**CLIP_SIZES, temporal_num_layers=2, **overrides)


def text_inputs(lengths=(10, 6, 3), seed=0):
    """Token ids with start and end tokens and zero padding, like the authors' tokenisation."""
    g = torch.Generator().manual_seed(seed)
    total = max(lengths) + 2
    input_ids = torch.zeros(len(lengths), total, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        input_ids[row, 0] = START
        input_ids[row, 1 : length - 1] = torch.randint(1, START, (length - 2,), generator=g)
        input_ids[row, length - 1] = END
        attention_mask[row, :length] = 1
    return input_ids, attention_mask


def video_inputs(batch=3, frames=6, seed=1, real_frames=None):
    """Random normalised frames (batch, frames, 3, 32, 32) and a mask; `real_frames` lists real counts per video."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, frames, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    mask = torch.ones(batch, frames, dtype=torch.long)
    for row, count in enumerate(real_frames or []):
        mask[row, count:] = 0
        pixels[row, count:] = 0
    return pixels, mask


def run_isolated(code: str, cwd, timeout=300) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter where this repository's packages cannot be imported (even when installed
    in editable mode), with a private Hugging Face cache and no network."""
    blocker = "import sys\nfor _name in ('clip2video', 'modeling_clip2video', 'processing', 'training', 'pipelines', 'apps'):\n    sys.modules[_name] = None\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(cwd / "hf_home"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(
        [sys.executable, "-c", blocker + textwrap.dedent(code)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"isolated process failed:\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr}")
    return result

"""Tiny CLIP / CLIP2Video configurations, random inputs, and tiny but complete checkpoint folders.

Two tiny configurations, for two kinds of test:

- `tiny_config(**overrides)`: the model tests' configuration (width 128, 4 text layers, a toy vocabulary of 100 token
  ids), fed with the random `text_inputs` / `video_inputs` below.
- `tiny_checkpoint_config()`: the paper's full model at toy size (width 64, one layer per tower) with the real CLIP
  vocabulary, so that the real processor's token ids fit; the model of `save_tiny_checkpoint` folders, used by the
  pipelines, apps and training tests.
"""

from pathlib import Path

import torch
from transformers import CLIPConfig

from clip2video.modeling_clip2video import CLIP2VideoConfig, CLIP2VideoModel
from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer

IMAGE_SIZE = 32

# ----------------------------------------------------------------------------------------------------------------------
# The model tests' configuration and inputs.

WIDTH = 128  # two heads of 64, as the authors derive heads from width
VOCAB_SIZE = 100
START, END = 98, 99  # the toy vocabulary's start and end tokens

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
    """The model tests' CLIP2Video configuration (toy vocabulary), with `overrides` (e.g. one of `VARIANTS`)."""
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


# ----------------------------------------------------------------------------------------------------------------------
# Tiny checkpoint folders: the model with the real CLIP vocabulary and the real processor.

CHECKPOINT_WIDTH = 64
CHECKPOINT_MAX_FRAMES = 4
# The real CLIP vocabulary: 49,406 is <|startoftext|>, 49,407 <|endoftext|>.
CLIP_START, CLIP_END = 49406, 49407


def tiny_checkpoint_config() -> CLIP2VideoConfig:
    """The paper's full model (TDB, temporal transformer, TAB) at toy size, with the real CLIP vocabulary."""
    layer = dict(
        hidden_size=CHECKPOINT_WIDTH, intermediate_size=2 * CHECKPOINT_WIDTH, num_attention_heads=1,
        num_hidden_layers=1,
    )
    return CLIP2VideoConfig(
        projection_dim=CHECKPOINT_WIDTH,
        text_config=dict(
            **layer, max_position_embeddings=77, bos_token_id=CLIP_START, eos_token_id=CLIP_END, pad_token_id=CLIP_END
        ),
        vision_config=dict(**layer, image_size=IMAGE_SIZE, patch_size=16),
        temporal_num_layers=1,
        num_frames=CHECKPOINT_MAX_FRAMES,
    )


def tiny_processor() -> CLIP2VideoProcessor:
    """The real processor (offline CLIP tokenizer) at 32 x 32 pixels and at most 4 frames."""
    video_processor = CLIP2VideoVideoProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        num_frames=CHECKPOINT_MAX_FRAMES,
    )
    return CLIP2VideoProcessor(video_processor=video_processor, tokenizer=offline_clip_tokenizer())


def save_tiny_checkpoint(folder: Path, with_apps: bool = True, seed: int = 0) -> Path:
    """Saves a randomly initialised tiny model and its processor to `folder`; with `with_apps`, also the pipelines
    and the endpoint handler, as the publishing path does."""
    torch.manual_seed(seed)
    CLIP2VideoModel(tiny_checkpoint_config()).eval().save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    if with_apps:
        from clip2video.pipelines.publishing import complete_saved_checkpoint

        complete_saved_checkpoint(folder)
    return Path(folder)


def assert_resumed_exactly(uninterrupted: Path, resumed: Path, early_checkpoint: Path) -> None:
    """A resumed run ended with exactly the weights of the uninterrupted one (`model.safetensors` of both folders),
    and those weights moved after `early_checkpoint` (a checkpoint holds the training wrapper, whose parameters are
    prefixed "model."), so the equality is not that of two untrained models."""
    from safetensors.torch import load_file

    expected = load_file(uninterrupted / "model.safetensors")
    actual = load_file(resumed / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
    early = load_file(early_checkpoint / "model.safetensors")
    assert not torch.equal(early["model.text_projection.weight"], expected["text_projection.weight"])

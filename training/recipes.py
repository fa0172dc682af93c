"""What a training run trains: the recipes (the paper's and the synthetic one), the model and processor each starts
from, and the optimizer's parameter groups."""

from torch import nn
from transformers import AutoTokenizer

from clip2video.modeling_clip2video import CLIP2VideoConfig, CLIP2VideoModel
from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer

# The recipe of CLIP4Clip, which CLIP2Video's authors trained with (their README and scripts): Adam(0.9, 0.98, 1e-6)
# with decoupled weight decay 0.2, learning rate 1e-4 for the new modules and 1e-4 * 1e-3 for CLIP's weights, 10%
# linear warm-up then cosine decay, 5 epochs, global batch 128, 12 frames, 32 tokens, gradient norm clipped at 1.
PAPER_RECIPE = dict(
    learning_rate=1e-4,
    clip_learning_rate_scale=1e-3,
    weight_decay=0.2,
    warmup_proportion=0.1,
    num_train_epochs=5,
    global_batch_size=128,
    num_frames=12,
    max_text_length=32,
    max_grad_norm=1.0,
    eval_batch_size=64,
    cache_frames=False,
    distinct_captions_in_batch=False,
    mean_pooling_baseline=False,
)
# The embedded default: a small model trained from scratch, so every weight learns at the full rate.
SYNTHETIC_RECIPE = dict(
    learning_rate=2e-3,
    clip_learning_rate_scale=1.0,
    weight_decay=0.05,
    warmup_proportion=0.1,
    num_train_epochs=10,
    global_batch_size=128,
    num_frames=8,
    max_text_length=32,
    max_grad_norm=1.0,
    eval_batch_size=60,
    cache_frames=True,
    distinct_captions_in_batch=True,
    mean_pooling_baseline=True,
)

# Temporal modules per architecture; `clip2video` keeps the configuration's (the paper's) defaults.
ARCHITECTURES = {
    "clip2video": {},
    "mean_pooling": dict(
        temporal_pooling="mean",
        use_temporal_difference_block=False,
        difference_projection="none",
        use_temporal_alignment_block=False,
    ),
}
CLIP_PARAMETER_PREFIXES = ("text_model.", "vision_model.", "text_projection.", "visual_projection.", "logit_scale")


def small_synthetic_config(num_frames: int, architecture: str) -> CLIP2VideoConfig:
    """A small CLIP for 32x32 frames: a 2-layer ViT of width 32 on 8x8-pixel patches (16 patches a frame: 4x4
    patches learned the motions in about two thirds of the optimizer steps, but each step cost 4.6 times as much), a
    2-layer text transformer of width 64, 64-d embeddings, and the 49,408-token embedding table of the CLIP
    tokenizer."""
    width = 64
    return CLIP2VideoConfig(
        projection_dim=width,
        text_config=dict(
            hidden_size=width, intermediate_size=4 * width, num_attention_heads=2, num_hidden_layers=2,
            max_position_embeddings=32,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=128, num_attention_heads=2, num_hidden_layers=2,
            image_size=32, patch_size=8,
        ),
        temporal_num_layers=2,
        num_frames=num_frames,
        max_frame_positions=max(16, num_frames),
        **ARCHITECTURES[architecture],
    )


def build_model(model_name_or_path: str | None, num_frames: int, architecture: str | None) -> CLIP2VideoModel:
    """The model a run trains: the small synthetic one from scratch, or a CLIP / CLIP2Video checkpoint with the
    temporal modules of `architecture` (None keeps the checkpoint's own)."""
    if model_name_or_path is None:
        return CLIP2VideoModel(small_synthetic_config(num_frames, architecture or "clip2video"))
    overrides = dict(ARCHITECTURES[architecture]) if architecture else {}
    return CLIP2VideoModel.from_pretrained(model_name_or_path, num_frames=num_frames, **overrides)


def model_config(model_name_or_path: str | None, num_frames: int, token: str | None = None) -> CLIP2VideoConfig:
    """The configuration `build_model` starts from, read without loading weights (the processor needs its image
    size before any model exists)."""
    if model_name_or_path is None:
        return small_synthetic_config(num_frames, "clip2video")
    return CLIP2VideoConfig.from_pretrained(model_name_or_path, token=token)


def build_processor(model_name_or_path: str | None, num_frames: int, config: CLIP2VideoConfig) -> CLIP2VideoProcessor:
    """The paper's video processing at the model's image size and `--num_frames`, and the checkpoint's CLIP tokenizer
    (the same vocabulary as OpenAI CLIP's, read from the open-clip-torch wheel when the checkpoint has none)."""
    image_size = config.vision_config.image_size
    video_processor = CLIP2VideoVideoProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        num_frames=num_frames,
    )
    tokenizer = None
    if model_name_or_path is not None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        except (OSError, ValueError):
            tokenizer = None
    return CLIP2VideoProcessor(video_processor=video_processor, tokenizer=tokenizer or offline_clip_tokenizer())


def parameter_groups(model: nn.Module, learning_rate: float, clip_learning_rate_scale: float, weight_decay: float):
    """CLIP's pretrained weights learn at `learning_rate * clip_learning_rate_scale`, the new temporal modules at
    `learning_rate`; biases, norms, embedding tables and the logit scale (every parameter of fewer than 2 dimensions,
    and every `nn.Embedding`) are not decayed."""
    embedding_weights = {
        f"{name}.weight" for name, module in model.named_modules() if isinstance(module, nn.Embedding)
    }
    groups = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_clip = name.startswith(CLIP_PARAMETER_PREFIXES)
        decays = parameter.ndim >= 2 and name not in embedding_weights
        key = (is_clip, decays)
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": learning_rate * (clip_learning_rate_scale if is_clip else 1.0),
                "weight_decay": weight_decay if decays else 0.0,
            }
        groups[key]["params"].append(parameter)
    return list(groups.values())

"""Convert a checkpoint released by the CLIP2Video authors into a CLIP2Video folder for transformers.

    python -m clip2video.modeling_clip2video.convert_original_checkpoint --checkpoint pytorch_model.bin.2 --output_dir clip2video-msrvtt

The authors' files (`pytorch_model.bin.N`) hold OpenAI CLIP under `clip.*` plus the temporal modules
(`frame_position_embeddings`, `transformerClip`, `type_position_embeddings`, `frame2t_attention` or
`frame2t_projection`, `trans_layernorm`, `weight_center`, `emb_center`, `actionClip`), some tensors in float16.
The architecture flags keep the original names and the defaults of the authors' MSR-VTT test script; sizes come
from the tensors' shapes. The output folder holds `model.safetensors` (float32), `config.json` with `auto_map`, and
this package's modeling code, so `AutoModel.from_pretrained(folder, trust_remote_code=True)` loads it anywhere.
`python -m clip2video.pipelines.publishing convert` (same flags) converts and publishes in one call: the processor,
the pipelines, the endpoint handler and the model card too.
"""

import argparse
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .configuration_clip2video import CLIP2VideoConfig
from .modeling_clip2video import CLIP2VideoModel


# The flags of the authors' scripts, with the defaults of their MSR-VTT test script (test/MSRVTT9k_TAB_TDB.sh).
ORIGINAL_FLAG_DEFAULTS = {
    "sim_type": "seqTransf",
    "temporal_type": "TDB",
    "temporal_proj": "sigmoid_selfA",
    "center_type": "TAB",
    "centerK": 5,
    "center_weight": 0.5,
    "center_proj": "TAB_TDB",
    "cross_num_hidden_layers": 4,
}
ORIGINAL_FLAG_CHOICES = {
    "sim_type": ("meanP", "seqTransf"),
    "temporal_type": ("", "TDB"),
    "temporal_proj": ("", "sigmoid_mlp", "sigmoid_selfA"),
    "center_type": ("", "TAB"),
    "center_proj": ("", "TAB", "TAB_TDB"),
}
# Tensors an OpenAI CLIP state dict may carry that are not weights.
_CLIP_METADATA_KEYS = {"clip.input_resolution", "clip.context_length", "clip.vocab_size"}


class ConversionError(ValueError):
    """The checkpoint does not fit the requested architecture; the message names the tensor or flag."""


def config_from_original(state_dict: dict[str, torch.Tensor], **flags) -> CLIP2VideoConfig:
    """The [`CLIP2VideoConfig`] of an original checkpoint: sizes from its tensors, architecture from the original
    flags (`sim_type`, `temporal_type`, `temporal_proj`, `center_type`, `centerK`, `center_weight`,
    `center_proj`, `cross_num_hidden_layers`; missing ones take the MSR-VTT script's defaults)."""
    unknown = set(flags) - set(ORIGINAL_FLAG_DEFAULTS)
    if unknown:
        raise ConversionError(f"Unknown original flags: {sorted(unknown)}.")
    flags = {**ORIGINAL_FLAG_DEFAULTS, **flags}
    for name, choices in ORIGINAL_FLAG_CHOICES.items():
        if flags[name] not in choices:
            raise ConversionError(f"--{name} must be one of {choices}, got {flags[name]!r}.")

    def tensor(key: str, ndim: int) -> torch.Tensor:
        if key not in state_dict:
            raise ConversionError(f"The checkpoint has no tensor {key!r}; is it an original CLIP2Video checkpoint?")
        value = state_dict[key]
        if value.ndim != ndim or 0 in value.shape:
            raise ConversionError(
                f"Tensor {key!r} has shape {tuple(value.shape)}; an original checkpoint stores it with {ndim} "
                "non-empty dimensions."
            )
        return value

    def count_blocks(prefix: str) -> int:
        pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
        indices = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
        if indices != set(range(len(indices))):
            raise ConversionError(f"The blocks under {prefix!r} are not numbered 0..N-1: {sorted(indices)}.")
        return len(indices)

    vision_width, _, patch_size, _ = tensor("clip.visual.conv1.weight", 4).shape
    vision_positions = tensor("clip.visual.positional_embedding", 2).shape[0]
    grid = round((vision_positions - 1) ** 0.5)
    if grid * grid + 1 != vision_positions:
        raise ConversionError(
            f"Tensor 'clip.visual.positional_embedding' has {vision_positions} positions, not a square grid of patches "
            "plus the class token."
        )
    text_width = tensor("clip.ln_final.weight", 1).shape[0]
    text_positions, _ = tensor("clip.positional_embedding", 2).shape
    projection_dim = tensor("clip.text_projection", 2).shape[1]
    for key, width in (("clip.visual.conv1.weight", vision_width), ("clip.ln_final.weight", text_width)):
        if width % 64:
            raise ConversionError(f"Tensor {key!r} gives a width of {width}, not a multiple of CLIP's 64-wide heads.")

    # What the original computes with these flags: TDB and its projection only act inside the temporal
    # transformer; TAB's extra layer needs the frame-position table, which only seqTransf creates.
    temporal_transformer = flags["sim_type"] == "seqTransf"
    difference_block = temporal_transformer and flags["temporal_type"] == "TDB"
    alignment_block = flags["center_type"] == "TAB"
    alignment_encoder = {"": "none", "TAB": "transformer", "TAB_TDB": "difference_transformer"}[flags["center_proj"]]
    if alignment_block and alignment_encoder != "none" and not temporal_transformer:
        raise ConversionError(
            f"--center_proj {flags['center_proj']} needs --sim_type seqTransf (the original has no frame-position "
            "table otherwise)."
        )
    if alignment_block and alignment_encoder == "difference_transformer" and flags["temporal_type"] != "TDB":
        raise ConversionError("--center_proj TAB_TDB needs --temporal_type TDB.")

    temporal_num_layers = flags["cross_num_hidden_layers"]
    max_frame_positions = 77
    if temporal_transformer:
        counted = count_blocks("transformerClip.resblocks")
        if counted != temporal_num_layers:
            raise ConversionError(
                f"The checkpoint has {counted} temporal layers (transformerClip.resblocks) but "
                f"--cross_num_hidden_layers is {temporal_num_layers}."
            )
        max_frame_positions = tensor("frame_position_embeddings.weight", 2).shape[0]
    num_centers = flags["centerK"]
    if alignment_block:
        stored = tensor("weight_center", 2).shape[0]
        if stored != num_centers:
            raise ConversionError(f"The checkpoint has {stored} centres (weight_center) but --centerK is {num_centers}.")

    return CLIP2VideoConfig(
        projection_dim=projection_dim,
        text_config={
            "vocab_size": tensor("clip.token_embedding.weight", 2).shape[0],
            "hidden_size": text_width,
            "intermediate_size": tensor("clip.transformer.resblocks.0.mlp.c_fc.weight", 2).shape[0],
            "num_hidden_layers": count_blocks("clip.transformer.resblocks"),
            "num_attention_heads": text_width // 64,
            "max_position_embeddings": text_positions,
            "projection_dim": projection_dim,
            # eos_token_id 2 selects transformers' legacy pooling: the token with the highest id, as OpenAI CLIP.
            "eos_token_id": 2,
        },
        vision_config={
            "hidden_size": vision_width,
            "intermediate_size": tensor("clip.visual.transformer.resblocks.0.mlp.c_fc.weight", 2).shape[0],
            "num_hidden_layers": count_blocks("clip.visual.transformer.resblocks"),
            "num_attention_heads": vision_width // 64,
            "image_size": patch_size * grid,
            "patch_size": patch_size,
            "projection_dim": projection_dim,
        },
        temporal_pooling="transformer" if temporal_transformer else "mean",
        temporal_num_layers=temporal_num_layers,
        use_temporal_difference_block=difference_block,
        difference_projection=(
            {"": "none", "sigmoid_mlp": "mlp", "sigmoid_selfA": "attention"}[flags["temporal_proj"]]
            if difference_block
            else "none"
        ),
        use_temporal_alignment_block=alignment_block,
        alignment_num_centers=num_centers,
        global_similarity_weight=float(flags["center_weight"]),
        alignment_temporal_encoder=alignment_encoder if alignment_block else "none",
        max_frame_positions=max_frame_positions,
    )


@dataclass
class _Rule:
    """One original tensor and the transformers parameters made from it."""

    original: str
    converted: tuple[str, ...]
    transform: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]


def _same(tensor):
    return (tensor,)


def _transpose(tensor):
    return (tensor.t(),)


def _split_qkv(tensor):
    return tuple(tensor.chunk(3, dim=0))


def _resblock_rules(original_prefix: str, converted_prefix: str, num_layers: int) -> Iterator[_Rule]:
    """OpenAI residual attention blocks (nn.MultiheadAttention with packed q/k/v) to `CLIPEncoderLayer`s."""
    for i in range(num_layers):
        o, c = f"{original_prefix}.{i}", f"{converted_prefix}.{i}"
        for kind in ("weight", "bias"):
            yield _Rule(
                f"{o}.attn.in_proj_{kind}",
                tuple(f"{c}.self_attn.{p}_proj.{kind}" for p in ("q", "k", "v")),
                _split_qkv,
            )
            for original, converted in (
                ("attn.out_proj", "self_attn.out_proj"),
                ("ln_1", "layer_norm1"),
                ("ln_2", "layer_norm2"),
                ("mlp.c_fc", "mlp.fc1"),
                ("mlp.c_proj", "mlp.fc2"),
            ):
                yield _Rule(f"{o}.{original}.{kind}", (f"{c}.{converted}.{kind}",), _same)


def _conversion_rules(config: CLIP2VideoConfig) -> list[_Rule]:
    rules = [
        _Rule("clip.visual.conv1.weight", ("vision_model.embeddings.patch_embedding.weight",), _same),
        _Rule("clip.visual.class_embedding", ("vision_model.embeddings.class_embedding",), _same),
        _Rule("clip.visual.positional_embedding", ("vision_model.embeddings.position_embedding.weight",), _same),
        _Rule("clip.visual.proj", ("visual_projection.weight",), _transpose),
        _Rule("clip.token_embedding.weight", ("text_model.embeddings.token_embedding.weight",), _same),
        _Rule("clip.positional_embedding", ("text_model.embeddings.position_embedding.weight",), _same),
        _Rule("clip.text_projection", ("text_projection.weight",), _transpose),
        _Rule("clip.logit_scale", ("logit_scale",), _same),
    ]
    for kind in ("weight", "bias"):
        rules += [
            _Rule(f"clip.visual.ln_pre.{kind}", (f"vision_model.pre_layrnorm.{kind}",), _same),
            _Rule(f"clip.visual.ln_post.{kind}", (f"vision_model.post_layernorm.{kind}",), _same),
            _Rule(f"clip.ln_final.{kind}", (f"text_model.final_layer_norm.{kind}",), _same),
        ]
    rules += _resblock_rules(
        "clip.visual.transformer.resblocks", "vision_model.encoder.layers", config.vision_config.num_hidden_layers
    )
    rules += _resblock_rules(
        "clip.transformer.resblocks", "text_model.encoder.layers", config.text_config.num_hidden_layers
    )
    if config.uses_frame_positions:
        rules.append(_Rule("frame_position_embeddings.weight", ("frame_position_embeddings.weight",), _same))
    if config.temporal_pooling == "transformer":
        rules += _resblock_rules("transformerClip.resblocks", "temporal_transformer.layers", config.temporal_num_layers)
    if config.use_temporal_difference_block:
        block = "temporal_difference_block"
        rules.append(_Rule("type_position_embeddings.weight", (f"{block}.type_embeddings.weight",), _same))
        if config.difference_projection == "mlp":
            rules.append(_Rule("frame2t_projection", (f"{block}.difference_projection.weight",), _transpose))
        if config.difference_projection == "attention":
            rules += _resblock_rules("frame2t_attention.resblocks", f"{block}.difference_attention.layers", 1)
        if config.difference_projection != "none":
            rules += [
                _Rule(f"trans_layernorm.{kind}", (f"{block}.difference_norm.{kind}",), _same)
                for kind in ("weight", "bias")
            ]
    if config.use_temporal_alignment_block:
        block = "temporal_alignment_block"
        rules += [
            _Rule("weight_center", (f"{block}.assignment_centers",), _same),
            _Rule("emb_center", (f"{block}.residual_centers",), _same),
        ]
        if config.alignment_temporal_encoder != "none":
            rules += _resblock_rules("actionClip.resblocks", f"{block}.frame_encoder.layers", 1)
    return rules


def _held_but_unused(config: CLIP2VideoConfig, key: str) -> bool:
    """Tensors the original model creates whatever it computes: with these flags they never reach a score."""
    if key in _CLIP_METADATA_KEYS or key.startswith("trans_layernorm."):
        return True  # the original always creates trans_layernorm
    if not config.use_temporal_difference_block:
        # --temporal_type TDB with meanP, or --temporal_proj without TDB: created, never called.
        return key == "type_position_embeddings.weight" or key.startswith(("frame2t_projection", "frame2t_attention."))
    return False


def convert_state_dict(
    original: dict[str, torch.Tensor], config: CLIP2VideoConfig
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Renames, splits and transposes the original tensors into [`CLIP2VideoModel`] parameters (float32).

    Returns the converted state dict and the original keys that were dropped because the original never uses them
    with this configuration. Raises [`ConversionError`] naming any missing, unexpected or mis-shaped tensor."""
    expected_shapes = {name: tuple(p.shape) for name, p in CLIP2VideoModel(config).state_dict().items()}
    converted, used = {}, set()
    for rule in _conversion_rules(config):
        if rule.original not in original:
            raise ConversionError(f"The checkpoint has no tensor {rule.original!r} (needed for {rule.converted[0]}).")
        used.add(rule.original)
        try:
            values = rule.transform(original[rule.original].float())
        except (RuntimeError, ValueError, IndexError) as error:  # e.g. a q/k/v tensor that does not split in three
            shape = tuple(original[rule.original].shape)
            raise ConversionError(
                f"Tensor {rule.original!r} has shape {shape}, which does not fit {rule.converted[0]} ({error})."
            ) from None
        for name, value in zip(rule.converted, values):
            if tuple(value.shape) != expected_shapes[name]:
                raise ConversionError(
                    f"Tensor {rule.original!r} has shape {tuple(original[rule.original].shape)}, which does not fit "
                    f"{name} {expected_shapes[name]}."
                )
            converted[name] = value.contiguous()
    leftovers = sorted(set(original) - used)
    dropped = [key for key in leftovers if _held_but_unused(config, key)]
    unexpected = [key for key in leftovers if key not in dropped]
    if unexpected:
        raise ConversionError(
            f"Unexpected tensors for this architecture: {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}. "
            "Check the flags (e.g. --sim_type, --temporal_proj, --center_proj)."
        )
    missing = sorted(set(expected_shapes) - set(converted))
    if missing:  # a rule is missing for a parameter of the model: a bug in this converter, not in the checkpoint
        raise ConversionError(f"No original tensor maps to {missing}.")
    return converted, dropped


def load_original_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Loads an original `pytorch_model.bin.N` with `weights_only=True` (no code from the file runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}")
    if path.stat().st_size == 0:
        raise ConversionError(f"{path} is empty, not a PyTorch checkpoint.")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load reports a foreign or damaged file with many exception types
        reason = f"{type(error).__name__}: {error}"
        raise ConversionError(f"{path} is not a PyTorch checkpoint, or a damaged one ({reason}).") from None
    if not isinstance(state_dict, dict):
        raise ConversionError(f"{path} holds a {type(state_dict).__name__}, not a state dict of tensors.")
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise ConversionError(f"{path} has a key {key!r} of type {type(key).__name__}; state dict keys are strings.")
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"{path}: {key!r} is a {type(value).__name__}, not a tensor.")
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def convert_original_checkpoint(checkpoint: str | Path, output_dir: str | Path, **flags) -> CLIP2VideoModel:
    """Converts the authors' checkpoint file into `output_dir` and returns the loaded model.

    Raises:
        `FileNotFoundError`: no file at `checkpoint`.
        `ConversionError`: `output_dir` is an existing file, or the checkpoint is empty, not a checkpoint, or does not
            fit the architecture; the message names the file or the tensor.
    """
    if Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise ConversionError(f"--output_dir {output_dir} is an existing file, not a folder.")
    original = load_original_checkpoint(checkpoint)
    config = config_from_original(original, **flags)
    state_dict, dropped = convert_state_dict(original, config)
    model = CLIP2VideoModel(config)
    model.load_state_dict(state_dict, strict=True)
    model.save_pretrained(output_dir)
    if not (Path(output_dir) / "config.json").is_file():  # save_pretrained only logs some failures
        raise ConversionError(f"Nothing was written to {output_dir}.")
    if dropped:
        print(f"Dropped tensors the original never uses with these flags: {', '.join(dropped)}")
    return model


def add_conversion_arguments(parser: argparse.ArgumentParser) -> None:
    """The converter's flags (`--checkpoint`, `--output_dir`, the authors' architecture flags), also those of the
    publishing command (`python -m clip2video.pipelines.publishing convert`)."""
    parser.add_argument("--checkpoint", required=True, help="the authors' pytorch_model.bin.N")
    parser.add_argument("--output_dir", required=True, help="folder to write the transformers checkpoint to")
    parser.add_argument("--sim_type", default=ORIGINAL_FLAG_DEFAULTS["sim_type"], choices=ORIGINAL_FLAG_CHOICES["sim_type"])
    parser.add_argument(
        "--temporal_type", default=ORIGINAL_FLAG_DEFAULTS["temporal_type"], choices=ORIGINAL_FLAG_CHOICES["temporal_type"]
    )
    parser.add_argument(
        "--temporal_proj", default=ORIGINAL_FLAG_DEFAULTS["temporal_proj"], choices=ORIGINAL_FLAG_CHOICES["temporal_proj"]
    )
    parser.add_argument(
        "--center_type", default=ORIGINAL_FLAG_DEFAULTS["center_type"], choices=ORIGINAL_FLAG_CHOICES["center_type"]
    )
    parser.add_argument("--centerK", type=int, default=ORIGINAL_FLAG_DEFAULTS["centerK"])
    parser.add_argument("--center_weight", type=float, default=ORIGINAL_FLAG_DEFAULTS["center_weight"])
    parser.add_argument(
        "--center_proj", default=ORIGINAL_FLAG_DEFAULTS["center_proj"], choices=ORIGINAL_FLAG_CHOICES["center_proj"]
    )
    parser.add_argument("--cross_num_hidden_layers", type=int, default=ORIGINAL_FLAG_DEFAULTS["cross_num_hidden_layers"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_conversion_arguments(parser)
    args = vars(parser.parse_args(argv))
    checkpoint, output_dir = args.pop("checkpoint"), args.pop("output_dir")
    try:
        model = convert_original_checkpoint(checkpoint, output_dir, **args)
    except (ConversionError, OSError) as error:  # OSError: a missing checkpoint, an unwritable output folder
        parser.exit(2, f"error: {error}\n")
    config = model.config
    print(
        f"Wrote {output_dir}: temporal_pooling={config.temporal_pooling}, "
        f"temporal difference block={config.use_temporal_difference_block} ({config.difference_projection}), "
        f"temporal alignment block={config.use_temporal_alignment_block} "
        f"(K={config.alignment_num_centers}, {config.alignment_temporal_encoder}), "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters. The model only: "
        "`python -m clip2video.pipelines.publishing convert` writes the published folder (processor, pipelines, "
        "endpoint handler, card) in the same call."
    )


if __name__ == "__main__":
    main()

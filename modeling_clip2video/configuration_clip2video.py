"""CLIP2Video configuration."""

import functools
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import (
    HfHubHTTPError,
    StrictDataclassClassValidationError,
    StrictDataclassFieldValidationError,
)
from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from transformers.dynamic_module_utils import get_relative_imports
from transformers.utils import logging
from transformers.utils.hub import cached_file


logger = logging.get_logger(__name__)


# Ranges a configuration may take, checked before any tensor is allocated (a hand-edited or hostile config.json with
# `temporal_num_layers: 100000` or `patch_size: 0` is refused, naming the field, not built until memory runs out).
# The ceilings lie far above every CLIP and CLIP2Video checkpoint (the largest CLIP, ViT-bigG/14: width 1664, 48
# layers, 77 positions, 224-pixel images).
_MAX_WIDTH = 16384
_MAX_LAYERS = 256
_MAX_POSITIONS = 16384
_MAX_VOCABULARY = 2**22
_MAX_CENTERS = 1024
_MAX_IMAGE_SIZE = 8192
_MAX_CHANNELS = 64
# The whole model (towers and temporal modules): 10^10 float32 parameters are 40 GB, 4 times ViT-bigG's CLIP.
_MAX_PARAMETERS = 10**10
# Integer fields of the towers: (minimum, maximum).
_TOWER_INTEGERS = {
    "text_config": {
        "vocab_size": (1, _MAX_VOCABULARY), "hidden_size": (1, _MAX_WIDTH), "intermediate_size": (1, 4 * _MAX_WIDTH),
        "num_hidden_layers": (1, _MAX_LAYERS), "num_attention_heads": (1, _MAX_WIDTH),
        "max_position_embeddings": (1, _MAX_POSITIONS),
    },
    "vision_config": {
        "hidden_size": (1, _MAX_WIDTH), "intermediate_size": (1, 4 * _MAX_WIDTH), "num_hidden_layers": (1, _MAX_LAYERS),
        "num_attention_heads": (1, _MAX_WIDTH), "num_channels": (1, _MAX_CHANNELS), "image_size": (1, _MAX_IMAGE_SIZE),
        "patch_size": (1, _MAX_IMAGE_SIZE),
    },
}
_TOWER_DEFAULTS = {"text_config": CLIPTextConfig, "vision_config": CLIPVisionConfig}


@strict
class CLIP2VideoConfig(CLIPConfig):
    r"""
    Configuration of [`CLIP2VideoModel`]: a CLIP configuration (`text_config`, `vision_config`, `projection_dim`,
    `logit_scale_init_value`) plus the temporal modules of CLIP2Video (Fang et al., 2021). The defaults are the
    paper's full model (the authors' released MSR-VTT / MSVD checkpoints); the original code's flag names are
    given for each field.

    temporal_pooling (`str`, defaults to `"transformer"`):
        How frame embeddings become one video embedding. `"mean"`: the average of the normalised frames (the
        original's `sim_type=meanP`). `"transformer"`: a temporal transformer over the frames, residual to the
        frames, then the average (`sim_type=seqTransf`).
    temporal_num_layers (`int`, defaults to 4):
        Layers of the temporal transformer (`cross_num_hidden_layers`). Initialised from CLIP's first text layers.
    temporal_layer_norm_eps (`float`, defaults to 1e-12):
        LayerNorm epsilon inside every temporal transformer layer (the original's TF-style LayerNorm).
    use_temporal_difference_block (`bool`, defaults to `True`):
        Temporal Difference Block (TDB, `temporal_type=TDB`): a difference token is inserted between every two
        adjacent frame embeddings before the temporal transformer. Needs `temporal_pooling="transformer"`.
    difference_projection (`str`, defaults to `"attention"`):
        How TDB turns the raw difference of two frame embeddings into a token: `"none"` keeps the difference
        (`temporal_proj=''`), `"mlp"` a linear map then LayerNorm and a sigmoid to [-1, 1] (`sigmoid_mlp`),
        `"attention"` one transformer layer across the differences, then LayerNorm and the sigmoid (`sigmoid_selfA`).
    use_temporal_alignment_block (`bool`, defaults to `True`):
        Temporal Alignment Block (TAB, `center_type=TAB`): frame and word tokens are softly assigned to shared
        centres, and the aggregated residuals of a caption and a video give a second, aligned similarity.
    alignment_num_centers (`int`, defaults to 5):
        Number of shared centres K (`centerK`): 5 for MSR-VTT and MSVD, 7 for VATEX.
    global_similarity_weight (`float`, defaults to 0.5):
        Weight of the global similarity in the final score; the aligned similarity gets `1 - weight`
        (`center_weight`). The training loss is weighted the same way.
    alignment_temporal_encoder (`str`, defaults to `"difference_transformer"`):
        What TAB adds to the frame tokens: every second frame passed through one transformer layer, either plain
        (`"transformer"`, `center_proj=TAB`) or with the Temporal Difference Block's difference tokens inserted
        (`"difference_transformer"`, `center_proj=TAB_TDB`); `"none"` uses the frame tokens alone (`center_proj=''`).
    max_frame_positions (`int`, defaults to 77):
        Rows of the frame-position table. The original reuses CLIP's 77-row text position table; a video may have
        at most this many frames.
    num_frames (`int`, defaults to 12):
        The number of frames the model is trained and evaluated with (`max_frames`); a hint for processors and
        pipelines, not a limit.
    initializer_range (`float`, defaults to 0.02):
        Standard deviation for the random initialisation of the temporal modules when they are not copied from CLIP.
    """

    model_type = "clip2video"

    temporal_pooling: Literal["mean", "transformer"] = "transformer"
    temporal_num_layers: int = 4
    temporal_layer_norm_eps: float = 1e-12
    use_temporal_difference_block: bool = True
    difference_projection: Literal["none", "mlp", "attention"] = "attention"
    use_temporal_alignment_block: bool = True
    alignment_num_centers: int = 5
    global_similarity_weight: float = 0.5
    alignment_temporal_encoder: Literal["none", "transformer", "difference_transformer"] = "difference_transformer"
    max_frame_positions: int = 77
    num_frames: int = 12
    initializer_range: float = 0.02

    @property
    def uses_frame_positions(self) -> bool:
        """Whether any temporal module reads the frame-position table."""
        return self.temporal_pooling == "transformer" or (
            self.use_temporal_alignment_block and self.alignment_temporal_encoder != "none"
        )

    @property
    def retrieval_embedding_dim(self) -> int:
        """Width of the retrieval embedding (`pooler_output` of `get_text_features` / `get_video_features`, what a
        vector store indexes): `2 * projection_dim` with the Temporal Alignment Block (the global and the aligned
        embeddings side by side), `projection_dim` without."""
        return self.projection_dim * (2 if self.use_temporal_alignment_block else 1)

    def __post_init__(self, **kwargs):
        # A CLIP checkpoint's config.json says "clip": this configuration stays a CLIP2Video one.
        kwargs.pop("model_type", None)
        # Before the towers' configurations are built: their own validators divide by `num_attention_heads`.
        self.validate_ranges()
        super().__post_init__(**kwargs)
        self.validate_temporal_options()

    def validate_ranges(self):
        """Part of `@strict`-powered validation: every size lies in its range (positive, under a ceiling far above
        any CLIP checkpoint), the towers' shapes divide (`image_size` by `patch_size`, widths by heads), the numbers
        are finite, and the whole model stays under `_MAX_PARAMETERS`. Raises a `ValueError` naming the field; runs
        before the towers' configurations are built and before any tensor is allocated."""
        own = {
            "temporal_num_layers": (1, _MAX_LAYERS), "alignment_num_centers": (1, _MAX_CENTERS),
            "max_frame_positions": (1, _MAX_POSITIONS), "num_frames": (1, _MAX_POSITIONS),
            "projection_dim": (1, _MAX_WIDTH),
        }
        for name, (low, high) in own.items():
            _check_integer(name, getattr(self, name), low, high)
        _check_number("temporal_layer_norm_eps", self.temporal_layer_norm_eps, 0.0, 1.0, open_low=True)
        _check_number("global_similarity_weight", self.global_similarity_weight, 0.0, 1.0)
        _check_number("initializer_range", self.initializer_range, 0.0, 10.0)
        # exp(logit_scale) is the scores' scale: above 88.7 it overflows float32.
        _check_number("logit_scale_init_value", self.logit_scale_init_value, -88.0, 88.0)
        towers = {}
        for key, limits in _TOWER_INTEGERS.items():
            value = getattr(self, key)
            if value is not None and not isinstance(value, dict) and not hasattr(value, "to_dict"):
                raise ValueError(f"{key} must be a dictionary or a configuration, got {type(value).__name__}.")
            given = value.to_dict() if hasattr(value, "to_dict") else dict(value or {})
            defaults = _TOWER_DEFAULTS[key]
            tower = {
                name: given.get(name, getattr(defaults, name))
                for name in [*limits, "layer_norm_eps", "attention_dropout"]
            }
            for name, (low, high) in limits.items():
                _check_integer(f"{key}.{name}", tower[name], low, high)
            _check_number(f"{key}.layer_norm_eps", tower["layer_norm_eps"], 0.0, 1.0, open_low=True)
            _check_number(f"{key}.attention_dropout", tower["attention_dropout"], 0.0, 1.0)
            if tower["hidden_size"] % tower["num_attention_heads"]:
                raise ValueError(
                    f"{key}.hidden_size ({tower['hidden_size']}) must be a multiple of {key}.num_attention_heads "
                    f"({tower['num_attention_heads']})."
                )
            towers[key] = tower
        vision = towers["vision_config"]
        if vision["image_size"] % vision["patch_size"]:
            raise ValueError(
                f"vision_config.image_size ({vision['image_size']}) must be a multiple of vision_config.patch_size "
                f"({vision['patch_size']})."
            )
        parameters = _parameter_count(towers["text_config"], vision, self)
        if parameters > _MAX_PARAMETERS:
            raise ValueError(
                f"This configuration describes a model of about {parameters:.2e} parameters, over the limit of "
                f"{_MAX_PARAMETERS:.0e}: check the widths, layer counts and table sizes (text_config, vision_config, "
                "temporal_num_layers, max_frame_positions, alignment_num_centers)."
            )

    def validate_temporal_options(self):
        """Raises a `ValueError` for combinations the model cannot build, saying what to change. Runs at
        construction and again when a model is built, since `from_pretrained` sets overrides after construction."""
        self.validate_ranges()
        if self.temporal_num_layers < 1:
            raise ValueError(f"temporal_num_layers must be at least 1, got {self.temporal_num_layers}.")
        if self.alignment_num_centers < 1:
            raise ValueError(f"alignment_num_centers must be at least 1, got {self.alignment_num_centers}.")
        if not 0.0 <= self.global_similarity_weight <= 1.0:
            raise ValueError(
                f"global_similarity_weight must lie in [0, 1], got {self.global_similarity_weight}."
            )
        if self.max_frame_positions < 1 or self.num_frames < 1:
            raise ValueError("max_frame_positions and num_frames must be at least 1.")
        if self.num_frames > self.max_frame_positions:
            raise ValueError(
                f"num_frames ({self.num_frames}) exceeds max_frame_positions ({self.max_frame_positions}): "
                "raise max_frame_positions or lower num_frames."
            )
        if self.use_temporal_difference_block and self.temporal_pooling != "transformer":
            raise ValueError(
                "The Temporal Difference Block feeds the temporal transformer: set temporal_pooling='transformer' "
                "or use_temporal_difference_block=False."
            )
        if self.difference_projection != "none" and not self.use_temporal_difference_block:
            raise ValueError(
                f"difference_projection={self.difference_projection!r} projects the Temporal Difference Block's "
                "tokens: set use_temporal_difference_block=True or difference_projection='none'."
            )
        if self.use_temporal_alignment_block and self.alignment_temporal_encoder == "difference_transformer":
            if not self.use_temporal_difference_block:
                raise ValueError(
                    "alignment_temporal_encoder='difference_transformer' reuses the Temporal Difference Block: set "
                    "use_temporal_difference_block=True or alignment_temporal_encoder='transformer'."
                )
        if self.use_temporal_alignment_block and self.alignment_temporal_encoder != "none":
            if self.temporal_pooling != "transformer":
                raise ValueError(
                    f"alignment_temporal_encoder={self.alignment_temporal_encoder!r} uses the frame-position table "
                    "of the temporal transformer: set temporal_pooling='transformer' or "
                    "alignment_temporal_encoder='none'."
                )
        if self.uses_frame_positions:
            text_width = self.text_config.hidden_size
            if text_width != self.projection_dim:
                raise ValueError(
                    f"The temporal layers are built like CLIP's text layers and run on projected frame embeddings, so "
                    f"text_config.hidden_size ({text_width}) must equal projection_dim ({self.projection_dim})."
                )
        if self.difference_projection == "mlp" and self.vision_config.hidden_size < self.projection_dim:
            raise ValueError(
                f"difference_projection='mlp' is initialised from the first {self.projection_dim} rows of the visual "
                f"projection, so vision_config.hidden_size ({self.vision_config.hidden_size}) must be at least "
                f"projection_dim ({self.projection_dim})."
            )

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        """Saves `config.json` like any configuration, and makes what its `custom_pipelines` advertises loadable from
        `save_directory`: each task's pipeline module (`"impl": "pipeline_clip2video.Class"`) is a file of the
        checkpoint, copied with its relative imports from the folder or Hub repository this configuration was loaded
        from (or already in `save_directory`). A task whose code cannot be found there is left out of the saved
        `config.json`, with a warning, rather than advertised without its code (`pipeline(task, model=folder)` would
        raise `OSError`). This configuration itself is left unchanged.

        A fine-tuned model (`AutoModel.from_pretrained(folder, trust_remote_code=True)`, trained, `save_pretrained`)
        therefore keeps its pipelines, and so do `Pipeline.save_pretrained` and every `push_to_hub`, which save
        through here."""
        advertised = getattr(self, "custom_pipelines", None)
        if not isinstance(advertised, dict) or not advertised or os.path.isfile(save_directory):
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        os.makedirs(save_directory, exist_ok=True)
        carried = {}
        for task, info in advertised.items():
            impl = info.get("impl") if isinstance(info, dict) else None
            if isinstance(impl, str) and _carry_module(impl.rpartition(".")[0], self, Path(save_directory)):
                carried[task] = info
        dropped = sorted(set(advertised) - set(carried))
        if not dropped:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        logger.warning(
            f"The pipelines of tasks {dropped} are not saved in {save_directory}: their code was found neither there "
            f"nor where this model was loaded from ({getattr(self, '_name_or_path', '') or 'nowhere'}), so "
            "config.json does not list them. Copy their file next to config.json and list them under "
            "`custom_pipelines` (the clip2video package does both: "
            "`clip2video.pipelines.publishing.complete_saved_checkpoint(folder)`)."
        )
        try:
            if carried:
                self.custom_pipelines = carried
            else:
                del self.custom_pipelines
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:
            self.custom_pipelines = advertised


def _carry_module(module: str, config: CLIP2VideoConfig, save_directory: Path, seen: frozenset = frozenset()) -> bool:
    """Whether the checkpoint module `module` (a flat file name without `.py`) and its relative imports are in
    `save_directory` after copying them there from the folder or Hub repository `config` was loaded from. A module
    name that is not a plain identifier (a hostile `config.json`) is never looked up."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", module):
        return False
    if module in seen:
        return True
    target = save_directory / f"{module}.py"
    source = target if target.is_file() else _find_module_file(f"{module}.py", config)
    if source is None:
        return False
    if Path(source).resolve() != target.resolve():
        # Written beside and renamed: a kill mid-copy never leaves a half file that config.json advertises.
        handle, partial = tempfile.mkstemp(dir=save_directory, prefix=f".{module}.", suffix=".partial")
        os.close(handle)
        try:
            shutil.copyfile(source, partial)
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
    return all(
        _carry_module(name, config, save_directory, seen | {module}) for name in get_relative_imports(target)
    )


def _find_module_file(filename: str, config: CLIP2VideoConfig) -> str | None:
    """`filename` in the local folder `config` was loaded from, or in its Hub repository at the loaded commit
    (from the cache, or downloaded unless offline); None when it is not there or cannot be reached."""
    origin = str(getattr(config, "_name_or_path", "") or "")
    if not origin:
        return None
    if os.path.isdir(origin):
        path = os.path.join(origin, filename)
        return path if os.path.isfile(path) else None
    commit_hash = getattr(config, "_commit_hash", None)
    if commit_hash is None:
        return None  # not loaded from the Hub (a moved or deleted folder, or a name given by hand)
    try:
        return cached_file(
            origin,
            filename,
            _commit_hash=commit_hash,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            _raise_exceptions_for_gated_repo=False,
        )
    except (OSError, ValueError, HfHubHTTPError):
        return None


def _check_integer(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    if not low <= value <= high:
        raise ValueError(f"{name} must lie between {low} and {high}, got {value}.")


def _check_number(name: str, value, low: float, high: float, open_low: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    if not math.isfinite(value) or not (low < value if open_low else low <= value) or not value <= high:
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}]"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}.")


def _parameter_count(text: dict, vision: dict, config: "CLIP2VideoConfig") -> int:
    """About how many parameters the model has (the layers' matrices and the tables; biases and norms left out)."""

    def layers(count: int, width: int, inner: int) -> int:
        return count * (4 * width * width + 2 * width * inner)

    width, projection = text["hidden_size"], config.projection_dim
    patches = (vision["image_size"] // vision["patch_size"]) ** 2 + 1
    total = (text["vocab_size"] + text["max_position_embeddings"]) * width + width * projection
    total += layers(text["num_hidden_layers"], width, text["intermediate_size"])
    total += vision["num_channels"] * vision["patch_size"] ** 2 * vision["hidden_size"]
    total += patches * vision["hidden_size"] + vision["hidden_size"] * projection
    total += layers(vision["num_hidden_layers"], vision["hidden_size"], vision["intermediate_size"])
    # The temporal transformer, TDB's and TAB's layers are built like text layers on projected embeddings.
    total += layers(config.temporal_num_layers + 2, projection, text["intermediate_size"])
    total += (config.max_frame_positions + config.alignment_num_centers) * projection
    return total


class ConfigFieldError(StrictDataclassFieldValidationError, ValueError):
    """A field of the wrong type (`"temporal_num_layers": "4"` in a config.json): `@strict`'s error, naming the field,
    that is also the `ValueError` every other invalid configuration raises."""


class ConfigClassError(StrictDataclassClassValidationError, ValueError):
    """A `@strict` class validator's refusal (one of transformers' own), also a `ValueError`."""


def _field_type_errors_as_value_errors(init):
    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except (StrictDataclassFieldValidationError, StrictDataclassClassValidationError) as error:
            if isinstance(error, ValueError):
                raise
            kind = ConfigFieldError if isinstance(error, StrictDataclassFieldValidationError) else ConfigClassError
            value_error = kind.__new__(kind)
            Exception.__init__(value_error, str(error))
            raise value_error from error

    return __init__


CLIP2VideoConfig.__init__ = _field_type_errors_as_value_errors(CLIP2VideoConfig.__init__)


__all__ = ["CLIP2VideoConfig"]

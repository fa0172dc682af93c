"""PyTorch CLIP2Video: image CLIP turned into a video-text retrieval model.

Fang et al., "CLIP2Video: Mastering Video-Text Retrieval via Image CLIP" (2021); journal version "Transferring
Image-CLIP to Video-Text Retrieval via Temporal Relations" (IEEE TMM 2023).

Every real frame goes through CLIP's vision tower and projection. The **Temporal Difference Block** inserts a token
for the change between every two adjacent frames, a **temporal transformer** mixes frames and differences, and the
average of its frame outputs is the global video embedding. The **Temporal Alignment Block** softly assigns frame and
word tokens to K shared centres and compares the aggregated residuals. The score is a weighted sum of the global and
the aligned cosine similarities, scaled by CLIP's logit scale.

Where this port differs from the authors' code: padded frames are handled exactly (a video's scores do not depend
on its padding nor on the other videos of its batch). On videos without padding the scores are the same.
"""

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPTextConfig
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
from transformers.activations import QuickGELUActivation
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.clip.modeling_clip import (
    CLIPAttention,
    CLIPEncoderLayer,
    CLIPMLP,
    eager_attention_forward,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, is_tracing, logging
from transformers.utils.generic import can_return_tuple

from .configuration_clip2video import CLIP2VideoConfig


logger = logging.get_logger(__name__)

# The authors initialise their extra parameters (centres, MLP projection) with this standard deviation.
_AUTHORS_INIT_STD = 64**-0.5


@dataclass
class CLIP2VideoOutput(ModelOutput):
    r"""
    loss (`torch.Tensor` of shape `()`, returned when `return_loss=True`):
        The paper's loss: symmetric InfoNCE over the global similarity, plus (with the Temporal Alignment Block)
        symmetric InfoNCE over the aligned similarity, weighted by `global_similarity_weight` and its complement.
    logits_per_text (`torch.Tensor` of shape `(text_batch_size, video_batch_size)`):
        The retrieval scores: `logit_scale.exp() * text_embeds @ video_embeds.T`.
    logits_per_video (`torch.Tensor` of shape `(video_batch_size, text_batch_size)`):
        `logits_per_text.T`.
    text_embeds (`torch.Tensor` of shape `(text_batch_size, embedding_dim)`):
        L2-normalised retrieval embeddings of the captions (see [`CLIP2VideoModel.get_text_features`]).
    video_embeds (`torch.Tensor` of shape `(video_batch_size, embedding_dim)`):
        L2-normalised retrieval embeddings of the videos (see [`CLIP2VideoModel.get_video_features`]).
    global_logits_per_text (`torch.Tensor` of shape `(text_batch_size, video_batch_size)`):
        Scaled cosine similarity of the global text and video embeddings.
    aligned_logits_per_text (`torch.Tensor` of shape `(text_batch_size, video_batch_size)`, with the Temporal
    Alignment Block only):
        Scaled cosine similarity of the Temporal Alignment Block's embeddings.
    frame_embeds (`torch.Tensor` of shape `(video_batch_size, num_frames, projection_dim)`):
        The projected CLIP embedding of every frame, zeros where `video_mask` is 0.
    text_model_output ([`CLIP2VideoTextOutput`]):
        The output of [`CLIP2VideoModel.get_text_features`] (the text tower's hidden states and attentions when
        `output_hidden_states` / `output_attentions` are passed).
    vision_model_output ([`CLIP2VideoVideoOutput`]):
        The output of [`CLIP2VideoModel.get_video_features`] (likewise for the vision tower).
    """

    loss: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    logits_per_video: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    video_embeds: torch.Tensor | None = None
    global_logits_per_text: torch.Tensor | None = None
    aligned_logits_per_text: torch.Tensor | None = None
    frame_embeds: torch.Tensor | None = None
    text_model_output: "CLIP2VideoTextOutput | None" = None
    vision_model_output: "CLIP2VideoVideoOutput | None" = None

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(value.to_tuple() if isinstance(value, ModelOutput) else value for value in self.values())


@dataclass
class CLIP2VideoTextOutput(BaseModelOutputWithPooling):
    r"""
    The caption embeddings of [`CLIP2VideoModel.get_text_features`], as transformers' `CLIPModel` returns them, with
    the two parts CLIP2Video scores with.

    last_hidden_state (`torch.Tensor` of shape `(batch_size, tokens, text_hidden_size)`):
        The text tower's last layer.
    pooler_output (`torch.Tensor` of shape `(batch_size, embedding_dim)`):
        The L2-normalised retrieval embedding: `global_embeds`, or with the Temporal Alignment Block
        `[sqrt(w) * global_embeds, sqrt(1 - w) * aligned_embeds]` (`embedding_dim = 2 * projection_dim`,
        `w = global_similarity_weight`), such that `logit_scale.exp() * text.pooler_output @ video.pooler_output.T`
        is `logits_per_text`.
    hidden_states (`tuple(torch.Tensor)`, returned with `output_hidden_states=True`):
        The text tower's embeddings and the output of each of its layers.
    attentions (`tuple(torch.Tensor)`, returned with `output_attentions=True`):
        The text tower's attention weights, one tensor per layer.
    global_embeds (`torch.Tensor` of shape `(batch_size, projection_dim)`):
        The projected end-token embedding, L2-normalised.
    aligned_embeds (`torch.Tensor` of shape `(batch_size, projection_dim)`, with the Temporal Alignment Block only):
        The Temporal Alignment Block's aggregate of the word tokens, L2-normalised.
    """

    global_embeds: torch.Tensor | None = None
    aligned_embeds: torch.Tensor | None = None


@dataclass
class CLIP2VideoVideoOutput(BaseModelOutputWithPooling):
    r"""
    The video embeddings of [`CLIP2VideoModel.get_video_features`], in the form transformers' `CLIPModel` returns
    image embeddings, with the parts CLIP2Video scores with and the per-frame embeddings.

    last_hidden_state (`torch.Tensor` of shape `(num_real_frames, 1 + patches, vision_hidden_size)`):
        The vision tower's last layer for the real frames (padded frames never enter the tower), video by video.
    pooler_output (`torch.Tensor` of shape `(batch_size, embedding_dim)`):
        The L2-normalised retrieval embedding, matching [`CLIP2VideoTextOutput`]'s `pooler_output`.
    hidden_states (`tuple(torch.Tensor)`, returned with `output_hidden_states=True`):
        The vision tower's embeddings and the output of each of its layers, for the real frames.
    attentions (`tuple(torch.Tensor)`, returned with `output_attentions=True`):
        The vision tower's attention weights, one tensor per layer, for the real frames.
    global_embeds (`torch.Tensor` of shape `(batch_size, projection_dim)`):
        The temporally pooled video embedding, L2-normalised.
    aligned_embeds (`torch.Tensor` of shape `(batch_size, projection_dim)`, with the Temporal Alignment Block only):
        The Temporal Alignment Block's aggregate of the frame tokens, L2-normalised.
    frame_embeds (`torch.Tensor` of shape `(batch_size, num_frames, projection_dim)`):
        The projected CLIP embedding of every frame (not normalised), zeros at padding.
    video_mask (`torch.BoolTensor` of shape `(batch_size, num_frames)`):
        True for the real frames.
    """

    global_embeds: torch.Tensor | None = None
    aligned_embeds: torch.Tensor | None = None
    frame_embeds: torch.Tensor | None = None
    video_mask: torch.Tensor | None = None


def _outside_autocast(method):
    """Runs a retrieval-head method in the head's own precision (float32) even inside `torch.autocast`: the towers
    tolerate bf16 matmuls, but the heads' sigmoids, norms and the scaled scores drift past 1e-2 in bf16. The device
    type comes from the inputs: under accelerate's offload hooks a parameter may sit on the meta device."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with torch.autocast(device_type=_device_type(args), enabled=False):
            return method(self, *args, **kwargs)

    return wrapper


def _device_type(values) -> str:
    for value in values:
        if isinstance(value, ModelOutput):
            value = next((item for item in value.values() if isinstance(item, torch.Tensor)), None)
        if isinstance(value, torch.Tensor):
            return value.device.type
    return "cpu"


# Below this many tokens (frames x patches, or captions x words) in a batch, copying the three projection matrices
# into one costs more than the single matmul saves (a query of a few captions); a video batch has thousands.
_FUSED_PROJECTION_MIN_TOKENS = 1024


# QuickGELU's factor, and the dtypes in which the MLP computes it as SiLU on scaled matmuls: float rounding moves the
# scores by about 1e-7 relative there, where in bf16 / fp16 the scaled activations would round differently.
_QUICK_GELU_FACTOR = 1.702
_QUICK_GELU_SILU_DTYPES = frozenset({torch.float32, torch.float64})


def _linear_without_forward_hooks(module: nn.Module) -> bool:
    """An `nn.Linear` (not a subclass) with a bias, and no forward hook of its own or global one."""
    return (
        type(module) is nn.Linear
        and module.bias is not None
        and not (module._forward_hooks or module._forward_pre_hooks)
        and not (nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)
    )


def _plain_linear(module: nn.Module, inputs: torch.Tensor) -> bool:
    """Whether the inference paths may run `module`'s matmul themselves instead of calling `module`: a plain
    `nn.Linear` with a bias, on the inputs' device, with nothing hooked into its call (forward hooks, or a replaced
    `forward` as accelerate's offload hooks and adapters install)."""
    return (
        _linear_without_forward_hooks(module)
        and "forward" not in vars(module)
        and not hasattr(module, "_hf_hook")
        and module.weight.device == inputs.device
    )


def _accelerate_hooked_linear(module: nn.Module) -> bool:
    """Whether `module` is an `nn.Linear` whose only addition is accelerate's hook (`add_hook_to_module`: the hook's
    `pre_forward` places the weights and inputs, the original forward runs, `post_forward` places the output), so
    that the matmul may run between the hook's two halves."""
    return (
        _linear_without_forward_hooks(module)
        and hasattr(module, "_hf_hook")
        and getattr(getattr(module, "_old_forward", None), "__func__", None) is nn.Linear.forward
    )


def _linear_call(module: nn.Module, inputs: torch.Tensor, matmul) -> torch.Tensor:
    """`matmul(inputs)` (which reads `module.weight` and `module.bias`), inside accelerate's hook when `module` has one,
    as `module(inputs)` would run its own matmul."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return matmul(inputs)
    args, _ = hook.pre_forward(module, inputs)
    return hook.post_forward(module, matmul(args[0]))


class CLIP2VideoAttention(CLIPAttention):
    """`CLIPAttention` with the same parameters and numbers, faster without gradients: the query, key and value
    projections run as one matmul on the concatenated weights (as the authors' `nn.MultiheadAttention` does), and
    the heads are read as views of its output. With gradients, offloaded or replaced projections (accelerate hooks,
    adapters, quantisation) or small batches it runs `CLIPAttention.forward` unchanged."""

    def _fusable(self, hidden_states: torch.Tensor) -> bool:
        projections = (self.q_proj, self.k_proj, self.v_proj)
        return (
            not torch.is_grad_enabled()
            and hidden_states.shape[:-1].numel() >= _FUSED_PROJECTION_MIN_TOKENS
            and all(_plain_linear(projection, hidden_states) for projection in projections)
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self._fusable(hidden_states):
            return super().forward(hidden_states, attention_mask, **kwargs)
        input_shape = hidden_states.shape[:-1]
        weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        bias = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
        # (..., 3 * embed_dim) -> three (batch, heads, tokens, head_dim) views, no copy.
        projected = F.linear(hidden_states, weight, bias).view(*input_shape, 3, -1, self.head_dim)
        queries, keys, values = (projected.select(-3, index).transpose(1, 2) for index in range(3))
        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        dropout = self.dropout if self.training else 0.0
        attn_output, attn_weights = attention_interface(
            self, queries, keys, values, attention_mask, scaling=self.scale, dropout=dropout, **kwargs
        )
        attn_output = self.out_proj(attn_output.reshape(*input_shape, -1).contiguous())
        return attn_output, attn_weights


class CLIP2VideoMLP(CLIPMLP):
    """`CLIPMLP` with the same parameters and, within float rounding, the same numbers; faster without gradients.
    QuickGELU is `x * sigmoid(1.702 x) = silu(1.702 x) / 1.702`: in float32 the first layer's matmul produces
    `1.702 x` (the factor rides on the GEMM's alpha and beta scalars, free), SiLU runs in place (one pass over the
    (tokens, 4 * width) activations instead of three and two fresh tensors), and the second matmul's alpha divides
    the factor out again (scores move by float rounding: about 1e-7 relative). In bf16 / fp16 and under autocast
    QuickGELU runs in place on the first layer's output, bit for bit transformers' values. With gradients, or with
    replaced or hooked linear layers (accelerate hooks, adapters, quantisation), it runs `CLIPMLP.forward` unchanged."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        fc1, fc2 = self.fc1, self.fc2
        if torch.is_grad_enabled() or type(self.activation_fn) is not QuickGELUActivation:
            return super().forward(hidden_states)
        if (
            hidden_states.dtype in _QUICK_GELU_SILU_DTYPES
            and not torch.is_autocast_enabled(hidden_states.device.type)
            and all(
                layer.weight.dtype == hidden_states.dtype
                and (_accelerate_hooked_linear(layer) or _plain_linear(layer, hidden_states))
                for layer in (fc1, fc2)
            )
        ):
            # Offloaded (accelerate) layers take this path too, so that a device map gives the same numbers.
            flat = hidden_states.reshape(-1, hidden_states.shape[-1])
            scaled = _linear_call(fc1, flat, self._scaled_fc1)
            F.silu(scaled, inplace=True)
            output = _linear_call(fc2, scaled, self._unscaled_fc2)
            return output.view(*hidden_states.shape[:-1], output.shape[-1])
        if not (_plain_linear(fc1, hidden_states) and _plain_linear(fc2, hidden_states)):
            return super().forward(hidden_states)
        hidden_states = fc1(hidden_states)
        gate = torch.mul(hidden_states, _QUICK_GELU_FACTOR)  # QuickGELU: x * sigmoid(1.702 * x)
        hidden_states.mul_(gate.sigmoid_())
        return fc2(hidden_states)

    def _scaled_fc1(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`1.702 * fc1(hidden_states)`, the factor applied by the GEMM (alpha and beta)."""
        fc1 = self.fc1
        return torch.addmm(fc1.bias, hidden_states, fc1.weight.t(), beta=_QUICK_GELU_FACTOR, alpha=_QUICK_GELU_FACTOR)

    def _unscaled_fc2(self, activations: torch.Tensor) -> torch.Tensor:
        """`fc2(activations / 1.702)`, the division applied by the GEMM (alpha)."""
        fc2 = self.fc2
        return torch.addmm(fc2.bias, activations, fc2.weight.t(), alpha=1.0 / _QUICK_GELU_FACTOR)


def _use_clip2video_layers(model: nn.Module) -> None:
    """Gives every `CLIPEncoderLayer` of `model` (both towers, the temporal transformers) the attention and MLP
    above: the same parameter names, initialisation and outputs. The classes are swapped in place, not rebuilt: the
    subclasses add no state, and building new modules would draw their initial weights from the random generator
    again (a seeded model would start from other weights than transformers' layers give it)."""
    for layer in model.modules():
        if isinstance(layer, CLIPEncoderLayer):
            if type(layer.self_attn) is CLIPAttention:
                layer.self_attn.__class__ = CLIP2VideoAttention
            if type(layer.mlp) is CLIPMLP:
                layer.mlp.__class__ = CLIP2VideoMLP


def temporal_layers_config(config: CLIP2VideoConfig, num_layers: int) -> CLIPTextConfig:
    """The configuration of the temporal transformer layers: CLIP text layers (the authors initialise them from
    CLIP's text tower), of width `projection_dim`, with the original's LayerNorm epsilon."""
    text_config = config.text_config
    layers_config = CLIPTextConfig(
        hidden_size=config.projection_dim,
        intermediate_size=text_config.intermediate_size,
        num_attention_heads=text_config.num_attention_heads,
        num_hidden_layers=num_layers,
        hidden_act=text_config.hidden_act,
        layer_norm_eps=config.temporal_layer_norm_eps,
        attention_dropout=text_config.attention_dropout,
        initializer_range=config.initializer_range,
    )
    layers_config._attn_implementation = config._attn_implementation
    return layers_config


class CLIP2VideoTemporalTransformer(nn.Module):
    """Bidirectional transformer over a sequence of frame (and difference) tokens, built from `CLIPEncoderLayer`."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList([CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden_states: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """`hidden_states`: (batch, tokens, width); `token_mask`: (batch, tokens), True for real tokens. Padded
        tokens are never attended to; their own outputs are meaningless."""
        attention_mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden_states, attention_mask=token_mask
        )
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask)
        return hidden_states


class CLIP2VideoTemporalDifferenceBlock(nn.Module):
    """Temporal Difference Block (TDB).

    Between every two adjacent frame embeddings it inserts a token for their difference, optionally projected to
    [-1, 1] by a linear map or by one attention layer across the differences, and adds position and type embeddings:
    frames `f0 f1 f2` become `f0 d0 f1 d1 f2`, where `d_i` has the position of `f_i` and the "difference" type.
    """

    def __init__(self, config: CLIP2VideoConfig):
        super().__init__()
        width = config.projection_dim
        self.projection_type = config.difference_projection
        # Row 0 marks difference tokens, row 1 frame tokens (the authors' order, kept for converted checkpoints).
        self.type_embeddings = nn.Embedding(2, width)
        if self.projection_type == "mlp":
            self.difference_projection = nn.Linear(width, width, bias=False)
        elif self.projection_type == "attention":
            self.difference_attention = CLIP2VideoTemporalTransformer(temporal_layers_config(config, num_layers=1))
        if self.projection_type != "none":
            self.difference_norm = nn.LayerNorm(width, eps=1e-5)

    def forward(
        self, frames: torch.Tensor, frame_mask: torch.Tensor, frame_positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        frames: (batch, T, width) frame embeddings; frame_mask: (batch, T) bool; frame_positions: (T, width).
        Returns the interleaved tokens (batch, 2T - 1, width) with position and type embeddings added, and their mask.
        A difference token is real only when both of its frames are.
        """
        batch_size, num_frames, width = frames.shape
        differences = frames[:, 1:] - frames[:, :-1]
        difference_mask = frame_mask[:, 1:] & frame_mask[:, :-1]
        if self.projection_type == "mlp":
            differences = self.difference_projection(differences)
        elif self.projection_type == "attention" and num_frames > 1:
            differences = self.difference_attention(differences + frame_positions[1:], difference_mask)
        if self.projection_type != "none":
            differences = 2 * torch.sigmoid(self.difference_norm(differences)) - 1

        # Parameters are read through their modules' forward, where accelerate's offload hooks load them.
        difference_type, frame_type = self.type_embeddings(torch.arange(2, device=frames.device))
        tokens = frames.new_empty(batch_size, 2 * num_frames - 1, width)
        tokens[:, 0::2] = frames + frame_positions + frame_type
        tokens[:, 1::2] = differences + frame_positions[:-1] + difference_type
        token_mask = frame_mask.new_empty(batch_size, 2 * num_frames - 1)
        token_mask[:, 0::2] = frame_mask
        token_mask[:, 1::2] = difference_mask
        return tokens, token_mask


class CLIP2VideoTemporalAlignmentBlock(nn.Module):
    """Temporal Alignment Block (TAB).

    Tokens (words of a caption; frames of a video, plus every second frame re-encoded with temporal context) are
    softly assigned to K centres; for each centre the weighted residuals to a second set of centres are summed over
    the tokens and normalised, and the mean over the centres, normalised, is the aligned embedding.
    """

    def __init__(self, config: CLIP2VideoConfig):
        super().__init__()
        width = config.projection_dim
        self.assignment_centers = nn.Parameter(torch.empty(config.alignment_num_centers, width))
        self.residual_centers = nn.Parameter(torch.empty(config.alignment_num_centers, width))
        self.temporal_encoder_type = config.alignment_temporal_encoder
        if self.temporal_encoder_type != "none":
            self.frame_encoder = CLIP2VideoTemporalTransformer(temporal_layers_config(config, num_layers=1))

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """tokens: (batch, N, width); token_mask: (batch, N) bool. Returns (batch, width), unit norm."""
        assignment = torch.softmax(tokens @ self.assignment_centers.t(), dim=-1)
        assignment = assignment * token_mask.unsqueeze(-1).to(assignment.dtype)
        # sum_n a[n, k] * (x[n] - c[k]) = sum_n a[n, k] x[n] - (sum_n a[n, k]) c[k]
        residuals = torch.einsum("bnk,bnd->bkd", assignment, tokens)
        residuals = residuals - assignment.sum(dim=1).unsqueeze(-1) * self.residual_centers
        residuals = F.normalize(residuals, dim=-1)
        return F.normalize(residuals.mean(dim=1), dim=-1)


class CLIP2VideoModel(CLIPModel):
    r"""
    CLIP2Video: CLIP's text and vision towers with the Temporal Difference Block, a temporal transformer and the
    Temporal Alignment Block (each optional, see [`CLIP2VideoConfig`]).

    `CLIP2VideoModel.from_pretrained` loads a CLIP2Video checkpoint, or any CLIP checkpoint, in which case the
    temporal modules are initialised from CLIP as the authors do: the temporal transformer from the first text
    layers, the frame-position table from the text position table, the type embeddings from its first two rows, the
    difference attention layer and TAB's layer from text layer 0, the difference MLP from the visual projection.

    Example:

    ```python
    >>> model = CLIP2VideoModel.from_pretrained("openai/clip-vit-base-patch32")  # paper's defaults, from CLIP
    >>> outputs = model(input_ids=..., attention_mask=..., pixel_values_videos=..., video_mask=...)
    >>> outputs.logits_per_text  # (num_captions, num_videos)
    ```
    """

    config: CLIP2VideoConfig
    config_class = CLIP2VideoConfig
    main_input_name = "pixel_values_videos"
    input_modalities = ("video", "text")
    # In half precision only the vision tower's linear layers (nearly all of a video's cost) hold bf16 / fp16 weights,
    # and they run under autocast of that dtype (`_vision_precision`), so that the residual stream, the embeddings and
    # the layer norms stay float32. The temporal heads and the logit scale stay in float32 (their sigmoids, norms and
    # the scale would move scores by more than 1e-2), and so does the text tower: a batch of 32-token captions costs
    # about 5% of a batch of 12-frame videos, and in bf16 it alone moves ViT-B/32 scores by ~1.1e-2; docs/model.md.
    _keep_in_fp32_modules_strict = [
        "vision_model.embeddings",
        "vision_model.pre_layrnorm",
        "vision_model.post_layernorm",
        "layer_norm1",
        "layer_norm2",
        "text_model",
        "text_projection",
        "frame_position_embeddings",
        "temporal_transformer",
        "temporal_difference_block",
        "temporal_alignment_block",
        "logit_scale",
    ]

    # A device map keeps each temporal block whole: their parameters are read by the block's own forward, which is
    # where accelerate's hooks load offloaded weights; the temporal transformers split by `CLIPEncoderLayer`.
    _no_split_modules = [
        *CLIPModel._no_split_modules,
        "CLIP2VideoTemporalDifferenceBlock",
        "CLIP2VideoTemporalAlignmentBlock",
    ]

    def __init__(self, config: CLIP2VideoConfig):
        config.validate_temporal_options()
        super().__init__(config)
        width = config.projection_dim
        if config.uses_frame_positions:
            self.frame_position_embeddings = nn.Embedding(config.max_frame_positions, width)
        if config.temporal_pooling == "transformer":
            self.temporal_transformer = CLIP2VideoTemporalTransformer(
                temporal_layers_config(config, num_layers=config.temporal_num_layers)
            )
        if config.use_temporal_difference_block:
            self.temporal_difference_block = CLIP2VideoTemporalDifferenceBlock(config)
        if config.use_temporal_alignment_block:
            self.temporal_alignment_block = CLIP2VideoTemporalAlignmentBlock(config)
        _use_clip2video_layers(self)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, CLIP2VideoTemporalAlignmentBlock):
            init.normal_(module.assignment_centers, std=_AUTHORS_INIT_STD)
            init.normal_(module.residual_centers, std=_AUTHORS_INIT_STD)

    @property
    def dtype(self) -> torch.dtype:
        """The towers' dtype. (`logit_scale`, the first parameter, and the temporal heads stay in float32 when the
        model is loaded in half precision, see `_keep_in_fp32_modules_strict`.)"""
        return self.visual_projection.weight.dtype

    def set_attn_implementation(self, attn_implementation, *args, **kwargs):
        super().set_attn_implementation(attn_implementation, *args, **kwargs)
        for module in self.modules():
            if isinstance(module, CLIP2VideoTemporalTransformer):
                module.config._attn_implementation = self.config._attn_implementation

    def compile_vision_tower_for_inference(self, **compile_kwargs) -> "CLIP2VideoModel":
        """Compiles the vision tower (nearly all of a video's cost) in place with TorchInductor and `freezing`, for
        inference: under `torch.inference_mode()` / `torch.no_grad()` the weights become constants of the compiled
        code (constant folding, GEMM weights prepacked), and the bias, QuickGELU, residual adds and norms are fused.
        Returns the model; `get_video_features`, `forward` and the checkpoint's names are unchanged, and so are the
        scores up to float rounding.

        Opt-in, because compiling costs more than a batch gains: the first call per input shape compiles (minutes on
        2 CPU cores; a second shape recompiles once with dynamic shapes), which at ViT-B/32 size pays back only after
        tens of batches (docs/model.md#speed). Freezing may bake in the weights of the first call without gradients
        (folded or prepacked ones are copies): after changing the weights (training, `load_state_dict`), reload the
        model and compile again. With gradients enabled (training) the tower compiles without freezing. `compile_kwargs` go to
        `torch.compile` (e.g. `dynamic=False`, `mode="max-autotune-no-cudagraphs"`); `options` are merged.
        """
        options = {"freezing": True, **compile_kwargs.pop("options", {})}
        self.vision_model.compile(options=options, **compile_kwargs)
        return self

    # ----------------------------------------------------------------------------------------------------------
    # Initialisation from CLIP
    # ----------------------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Loads a CLIP2Video checkpoint, or a CLIP checkpoint with the temporal modules initialised from CLIP.

        Keyword arguments that name [`CLIP2VideoConfig`] fields (e.g. `temporal_pooling="mean"`) override the
        checkpoint's configuration. Only temporal parameters missing from the checkpoint are initialised from
        CLIP; trained weights are never overwritten.

        A CLIP2Video checkpoint (`model_type` `"clip2video"`) that lacks temporal tensors the model needs (a truncated
        or hand-edited file, or overrides that add modules it was not trained with) loads, but with a warning that
        names every missing tensor and how it was filled: from CLIP where the authors initialise it so, at random
        otherwise (the TAB centres). The scores are then not the trained model's.
        """
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, loading_info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
        )
        check_finite_weights(model, pretrained_model_name_or_path)
        missing_keys = set(loading_info["missing_keys"])
        from_clip = model.initialize_temporal_modules_from_clip(missing_keys)
        missing_temporal = sorted(key for key in missing_keys if key.startswith(_TEMPORAL_PREFIXES))
        if missing_temporal and _is_clip2video_checkpoint(pretrained_model_name_or_path, kwargs):
            described = [f"{key} ({'from CLIP' if key in from_clip else 'random'})" for key in missing_temporal]
            logger.warning(
                f"The CLIP2Video checkpoint {pretrained_model_name_or_path} lacks {len(missing_temporal)} temporal "
                f"tensor(s) the model needs; they were initialised as for a new model, so the scores are not the "
                f"trained model's: {', '.join(described)}."
            )
        return (model, loading_info) if output_loading_info else model

    @torch.no_grad()
    def initialize_temporal_modules_from_clip(self, missing_keys: set[str]) -> list[str]:
        """Copies CLIP weights into the temporal parameters named in `missing_keys`, as the authors initialise a
        CLIP2Video model from CLIP. Returns the names of the parameters it set."""
        text_model = self.text_model
        text_layers = text_model.encoder.layers
        text_positions = text_model.embeddings.position_embedding.weight
        copies: dict[str, torch.Tensor] = {}

        def copy_layers(prefix: str, target_layers: nn.ModuleList):
            for index, layer in enumerate(target_layers):
                if index >= len(text_layers):
                    if any(key.startswith(f"{prefix}.{index}.") for key in missing_keys):
                        logger.warning(f"{prefix}.{index} has no text layer to start from; it keeps its random init.")
                    continue
                for name, value in text_layers[index].state_dict().items():
                    copies[f"{prefix}.{index}.{name}"] = value

        if self.config.uses_frame_positions:
            rows = min(self.config.max_frame_positions, text_positions.shape[0])
            weight = self.frame_position_embeddings.weight.detach().clone()
            weight[:rows] = text_positions[:rows]
            copies["frame_position_embeddings.weight"] = weight
        if self.config.temporal_pooling == "transformer":
            copy_layers("temporal_transformer.layers", self.temporal_transformer.layers)
        if self.config.use_temporal_difference_block:
            block = self.temporal_difference_block
            copies["temporal_difference_block.type_embeddings.weight"] = text_positions[:2]
            if block.projection_type == "mlp":
                # The authors take the first `projection_dim` rows of CLIP's (vision_width, projection_dim) matrix.
                width = self.config.projection_dim
                copies["temporal_difference_block.difference_projection.weight"] = (
                    self.visual_projection.weight[:, :width]
                )
            elif block.projection_type == "attention":
                copy_layers("temporal_difference_block.difference_attention.layers", block.difference_attention.layers)
        if self.config.use_temporal_alignment_block and self.config.alignment_temporal_encoder != "none":
            copy_layers(
                "temporal_alignment_block.frame_encoder.layers", self.temporal_alignment_block.frame_encoder.layers
            )

        parameters = dict(self.named_parameters())
        initialised = sorted(name for name in copies if name in missing_keys)
        # Offloaded parameters wait on the meta device, where a copy is silently a no-op.
        offloaded = [name for name in initialised if parameters[name].is_meta or copies[name].is_meta]
        if offloaded:
            raise ValueError(
                f"Cannot initialise {', '.join(offloaded)} from CLIP: they or their CLIP source are offloaded by the "
                "device_map. Load the CLIP checkpoint without offloading, save_pretrained the CLIP2Video model, and "
                "load that folder with your device_map."
            )
        for name in initialised:
            parameters[name].copy_(copies[name])
        if initialised:
            logger.info(f"Initialised from CLIP as the authors do: {', '.join(initialised)}")
        return initialised

    # ----------------------------------------------------------------------------------------------------------
    # Text
    # ----------------------------------------------------------------------------------------------------------

    def _head_dtype(self) -> torch.dtype:
        return self.logit_scale.dtype

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CLIP2VideoTextOutput | tuple:
        r"""
        The caption embeddings: `pooler_output` is the L2-normalised retrieval embedding (see
        [`CLIP2VideoTextOutput`]); `global_embeds` and `aligned_embeds` are its two parts, which training gathers
        across processes.

        input_ids (`torch.LongTensor` of shape `(batch_size, tokens)`): CLIP token ids, start and end tokens included.
        attention_mask (`torch.Tensor` of shape `(batch_size, tokens)`): 1 for real tokens, 0 for padding.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, tokens), got {tuple(input_ids.shape)}.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_ids "
                f"{tuple(input_ids.shape)}."
            )
        text_outputs, pooled, word_tokens = self._text_tower(input_ids, attention_mask, position_ids, **kwargs)
        global_embeds, aligned_embeds = self._text_head(pooled, word_tokens, attention_mask)
        return CLIP2VideoTextOutput(
            last_hidden_state=text_outputs.last_hidden_state,
            pooler_output=self._retrieval_embeds(global_embeds, aligned_embeds),
            hidden_states=text_outputs.hidden_states,
            attentions=text_outputs.attentions,
            global_embeds=global_embeds,
            aligned_embeds=aligned_embeds,
        )

    @_outside_autocast
    def _text_tower(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None, **kwargs
    ) -> tuple[BaseModelOutputWithPooling, torch.Tensor, torch.Tensor | None]:
        """The text tower's output, the projected end token (batch, projection_dim) and, with TAB, every projected
        token (batch, tokens, projection_dim); in float32 even under autocast (see `_keep_in_fp32_modules_strict`)."""
        text_outputs = self.text_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, return_dict=True, **kwargs
        )
        word_tokens = None
        if self.config.use_temporal_alignment_block:
            word_tokens = self.text_projection(text_outputs.last_hidden_state)
        return text_outputs, self.text_projection(text_outputs.pooler_output), word_tokens

    @_outside_autocast
    def _text_head(
        self, pooled: torch.Tensor, word_tokens: torch.Tensor | None, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        head_dtype = self._head_dtype()
        aligned_embeds = None
        if word_tokens is not None:
            # Every word token after the start token, including the end token, projected like the pooled one.
            word_mask = attention_mask.bool().clone()
            word_mask[:, 0] = False
            aligned_embeds = self.temporal_alignment_block(word_tokens.to(head_dtype), word_mask)
        return F.normalize(pooled.to(head_dtype), dim=-1), aligned_embeds

    # ----------------------------------------------------------------------------------------------------------
    # Video
    # ----------------------------------------------------------------------------------------------------------

    def _check_video_inputs(
        self, pixel_values_videos: torch.Tensor, video_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if pixel_values_videos.dim() != 5:
            raise ValueError(
                "pixel_values_videos must have shape (batch, frames, channels, height, width), got "
                f"{tuple(pixel_values_videos.shape)}."
            )
        if not pixel_values_videos.is_floating_point():
            raise ValueError(
                f"pixel_values_videos must be a floating point tensor of normalised pixels, got {pixel_values_videos.dtype}."
            )
        batch_size, num_frames = pixel_values_videos.shape[:2]
        if video_mask is None:
            video_mask = torch.ones(batch_size, num_frames, dtype=torch.bool, device=pixel_values_videos.device)
        if tuple(video_mask.shape) != (batch_size, num_frames):
            raise ValueError(
                f"video_mask must have shape (batch, frames) = {(batch_size, num_frames)}, got {tuple(video_mask.shape)}."
            )
        if self.config.uses_frame_positions and num_frames > self.config.max_frame_positions:
            raise ValueError(
                f"{num_frames} frames exceed the model's frame-position table ({self.config.max_frame_positions})."
            )
        video_mask = video_mask.to(device=pixel_values_videos.device).bool()
        if is_tracing(video_mask):
            # The mask checks below read tensor values, which `torch.compile`, `torch.export`, ONNX export and
            # `torch.jit.trace` cannot branch on; the shape checks above are kept. Eager runs check everything.
            return pixel_values_videos, video_mask
        frame_counts = video_mask.sum(dim=1)
        if (frame_counts == 0).any():
            empty = torch.nonzero(frame_counts == 0).flatten().tolist()
            raise ValueError(f"Videos {empty} of the batch have no real frame in video_mask.")
        positions = torch.arange(num_frames, device=video_mask.device)
        not_prefix = (video_mask != (positions < frame_counts.unsqueeze(1))).any(dim=1)
        if not_prefix.any():
            rows = torch.nonzero(not_prefix).flatten()
            raise ValueError(
                f"video_mask rows {rows.tolist()} have padding before a real frame: real frames must come first."
            )
        return pixel_values_videos, video_mask

    def _frame_features(
        self, pixel_values_videos: torch.Tensor, video_mask: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple[torch.Tensor, BaseModelOutputWithPooling]:
        """Projected CLIP embeddings of the real frames, (batch, frames, projection_dim) with zeros at padding, and
        the vision tower's output for the real frames. Padded frames are not passed through the vision tower."""
        if is_tracing(video_mask) or not video_mask.all():
            real_frames = pixel_values_videos[video_mask]
        else:  # no padding: a view instead of a copy of every frame
            real_frames = pixel_values_videos.flatten(0, 1)
        with self._vision_precision(real_frames.device.type):
            vision_outputs = self.vision_model(pixel_values=real_frames, return_dict=True, **kwargs)
            real_embeds = self.visual_projection(vision_outputs.pooler_output)
        frame_embeds = real_embeds.new_zeros(*video_mask.shape, real_embeds.shape[-1])
        frame_embeds[video_mask] = real_embeds
        return frame_embeds, vision_outputs

    def _frame_positions(self, num_frames: int, device: torch.device) -> torch.Tensor:
        """Rows `0 .. num_frames - 1` of the frame-position table, (num_frames, width), looked up through the
        embedding's forward (where accelerate's offload hooks load the table)."""
        return self.frame_position_embeddings(torch.arange(num_frames, device=device))

    def _vision_precision(self, device_type: str):
        """Autocast to the vision weights' dtype when they are half precision (`from_pretrained(dtype=...)`): the
        linear layers then run on the stored bf16 / fp16 weights while the residual stream, embeddings and norms stay
        float32. Plain bf16 execution would also round the residual stream: at ViT-B/32 size it moved scores by
        1.3e-2 of the largest score, against 0.4e-2 this way, and was not faster."""
        if self.dtype in (torch.float16, torch.bfloat16):
            return torch.autocast(device_type=device_type, dtype=self.dtype)
        return contextlib.nullcontext()

    def _global_video_embeds(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        num_frames = frames.shape[1]
        if self.config.temporal_pooling == "transformer":
            positions = self._frame_positions(num_frames, frames.device)
            if self.config.use_temporal_difference_block:
                tokens, token_mask = self.temporal_difference_block(frames, frame_mask, positions)
                frame_outputs = self.temporal_transformer(tokens, token_mask)[:, 0::2]
            else:
                frame_outputs = self.temporal_transformer(frames + positions, frame_mask)
            frames = frame_outputs + frames
        return F.normalize(masked_mean(F.normalize(frames, dim=-1), frame_mask), dim=-1)

    def _aligned_video_embeds(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        block = self.temporal_alignment_block
        tokens, token_mask = frames, frame_mask
        if block.temporal_encoder_type != "none":
            # Every second frame (a lower frame rate) is re-encoded with temporal context and added as extra tokens.
            sparse_frames, sparse_mask = frames[:, 0::2], frame_mask[:, 0::2]
            positions = self._frame_positions(sparse_frames.shape[1], frames.device)
            if block.temporal_encoder_type == "difference_transformer":
                encoder_inputs, encoder_mask = self.temporal_difference_block(sparse_frames, sparse_mask, positions)
                encoded = block.frame_encoder(encoder_inputs, encoder_mask)[:, 0::2]
            else:
                encoded = block.frame_encoder(sparse_frames + positions, sparse_mask)
            tokens = torch.cat([frames, encoded + sparse_frames], dim=1)
            token_mask = torch.cat([frame_mask, sparse_mask], dim=1)
        return block(tokens, token_mask)

    @can_return_tuple
    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor,
        video_mask: torch.Tensor | None = None,
        padding_mask_videos: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CLIP2VideoVideoOutput | tuple:
        r"""
        The video embeddings: `pooler_output` is the L2-normalised retrieval embedding matching
        [`get_text_features`]; `global_embeds` and `aligned_embeds` are its two parts; `frame_embeds` holds every
        frame's projected CLIP embedding (see [`CLIP2VideoVideoOutput`]).

        pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, frames, 3, height, width)`): CLIP-normalised
            frames, zero-padded.
        video_mask (`torch.Tensor` of shape `(batch_size, frames)`): 1 for real frames (which come first), 0 for
            padding; all frames are real when omitted.
        padding_mask_videos (`torch.Tensor` of shape `(batch_size, frames)`): the same mask under the name
            transformers' video retrieval models (PE Video) use; give one of the two.
        """
        video_mask = _one_video_mask(video_mask, padding_mask_videos)
        pixel_values_videos, video_mask = self._check_video_inputs(pixel_values_videos, video_mask)
        frames, vision_outputs = self._frame_features(pixel_values_videos, video_mask, **kwargs)
        frames, global_embeds, aligned_embeds = self._video_head(frames, video_mask)
        return CLIP2VideoVideoOutput(
            last_hidden_state=vision_outputs.last_hidden_state,
            pooler_output=self._retrieval_embeds(global_embeds, aligned_embeds),
            hidden_states=vision_outputs.hidden_states,
            attentions=vision_outputs.attentions,
            global_embeds=global_embeds,
            aligned_embeds=aligned_embeds,
            frame_embeds=frames,
            video_mask=video_mask,
        )

    @_outside_autocast
    def _video_head(
        self, frames: torch.Tensor, frame_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        frames = frames.to(self._head_dtype())
        aligned = self._aligned_video_embeds(frames, frame_mask) if self.config.use_temporal_alignment_block else None
        return frames, self._global_video_embeds(frames, frame_mask), aligned

    # ----------------------------------------------------------------------------------------------------------
    # Retrieval embeddings and forward
    # ----------------------------------------------------------------------------------------------------------

    def _retrieval_embeds(self, global_embeds: torch.Tensor, aligned_embeds: torch.Tensor | None) -> torch.Tensor:
        """With TAB, `w * <g_t, g_v> + (1 - w) * <a_t, a_v>` is the dot product of `[sqrt(w) g, sqrt(1 - w) a]`,
        a unit vector: one embedding per caption and per video gives the model's exact ranking."""
        if aligned_embeds is None:
            return global_embeds
        weight = self.config.global_similarity_weight
        return torch.cat([math.sqrt(weight) * global_embeds, math.sqrt(1.0 - weight) * aligned_embeds], dim=-1)

    def get_image_features(self, *args, **kwargs):
        raise NotImplementedError("CLIP2Video embeds videos: use get_video_features (a single image is a 1-frame video).")

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
        position_ids: torch.LongTensor | None = None,
        padding_mask_videos: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CLIP2VideoOutput | tuple:
        r"""
        input_ids (`torch.LongTensor` of shape `(text_batch_size, tokens)`): CLIP token ids, start and end tokens
            included (at most 32 tokens in the paper).
        attention_mask (`torch.Tensor` of shape `(text_batch_size, tokens)`): 1 for real tokens, 0 for padding.
        pixel_values_videos (`torch.FloatTensor` of shape `(video_batch_size, frames, 3, height, width)`): CLIP-
            normalised frames, zero-padded.
        video_mask (`torch.Tensor` of shape `(video_batch_size, frames)`): 1 for real frames (first), 0 for padding.
        return_loss (`bool`): return the paper's symmetric contrastive loss; caption i must describe video i.
        padding_mask_videos (`torch.Tensor` of shape `(video_batch_size, frames)`): `video_mask` under the name
            transformers' video retrieval models use; give one of the two.
        """
        if input_ids is None or pixel_values_videos is None:
            raise ValueError("forward needs both input_ids and pixel_values_videos.")
        text = self.get_text_features(input_ids, attention_mask, position_ids=position_ids, return_dict=True, **kwargs)
        video = self.get_video_features(
            pixel_values_videos, video_mask, padding_mask_videos=padding_mask_videos, return_dict=True, **kwargs
        )
        return self._score(text, video, return_loss=bool(return_loss))

    @_outside_autocast
    def _score(self, text: CLIP2VideoTextOutput, video: CLIP2VideoVideoOutput, return_loss: bool) -> CLIP2VideoOutput:
        weight = self.config.global_similarity_weight
        logits_per_text, global_logits, aligned_logits = similarity_logits(text, video, self.logit_scale, weight)
        loss = None
        if return_loss:
            if global_logits.shape[0] != global_logits.shape[1]:
                raise ValueError(
                    f"return_loss pairs caption i with video i: got {global_logits.shape[0]} captions and "
                    f"{global_logits.shape[1]} videos."
                )
            loss = contrastive_loss(global_logits, aligned_logits, weight)
        return CLIP2VideoOutput(
            loss=loss,
            logits_per_text=logits_per_text,
            logits_per_video=logits_per_text.t(),
            text_embeds=text.pooler_output,
            video_embeds=video.pooler_output,
            global_logits_per_text=global_logits,
            aligned_logits_per_text=aligned_logits,
            frame_embeds=video.frame_embeds,
            text_model_output=text,
            vision_model_output=video,
        )


def check_finite_weights(model: nn.Module, source) -> None:
    """Refuses a model whose weights hold NaN or infinity, or whose `logit_scale` overflows `exp` (scores of NaN or
    infinity for every input otherwise), naming the tensors. Offloaded (meta) tensors are not checked."""
    broken = [
        name
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
        if tensor.is_floating_point() and tensor.device.type != "meta" and not torch.isfinite(tensor).all()
    ]
    if broken:
        shown = ", ".join(broken[:5]) + (f" and {len(broken) - 5} more" if len(broken) > 5 else "")
        raise ValueError(f"The checkpoint {source} has NaN or infinite values in {len(broken)} tensor(s): {shown}.")
    scale = model.logit_scale
    if scale.device.type != "meta" and not torch.isfinite(scale.detach().float().exp()).all():
        raise ValueError(
            f"The checkpoint {source} has logit_scale {scale.detach().float().flatten().tolist()}: exp(logit_scale), "
            f"the scores' scale, overflows float32 (CLIP and CLIP2Video train it capped at ln 100 = {math.log(100):.4f})."
        )


def similarity_logits(
    text: CLIP2VideoTextOutput,
    video: CLIP2VideoVideoOutput,
    logit_scale: torch.Tensor,
    global_similarity_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Scores of every caption against every video: `(logits_per_text, global_logits, aligned_logits)`, each
    (text_batch, video_batch), `logit_scale` being the log of the inverse temperature. With the Temporal Alignment
    Block, `logits_per_text = w * global_logits + (1 - w) * aligned_logits`; otherwise it is `global_logits`."""
    scale = logit_scale.exp()
    global_logits = scale * text.global_embeds @ video.global_embeds.t()
    if text.aligned_embeds is None:
        return global_logits, global_logits, None
    aligned_logits = scale * text.aligned_embeds @ video.aligned_embeds.t()
    w = global_similarity_weight
    return w * global_logits + (1.0 - w) * aligned_logits, global_logits, aligned_logits


def contrastive_loss(
    global_logits: torch.Tensor, aligned_logits: torch.Tensor | None, global_similarity_weight: float
) -> torch.Tensor:
    """The paper's loss for square score matrices whose diagonals hold the matching pairs: symmetric InfoNCE over
    the global scores, and with the Temporal Alignment Block `w *` that `+ (1 - w) *` the same over the aligned ones."""
    loss = symmetric_contrastive_loss(global_logits)
    if aligned_logits is None:
        return loss
    w = global_similarity_weight
    return w * loss + (1.0 - w) * symmetric_contrastive_loss(aligned_logits)


_TEMPORAL_PREFIXES = (
    "frame_position_embeddings.",
    "temporal_transformer.",
    "temporal_difference_block.",
    "temporal_alignment_block.",
)


def _is_clip2video_checkpoint(pretrained_model_name_or_path, kwargs: dict) -> bool:
    """Whether the checkpoint's own `config.json` says `model_type: clip2video` (a CLIP checkpoint says `clip`)."""
    hub_kwargs = {
        key: kwargs[key]
        for key in ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
        if key in kwargs
    }
    try:
        config_dict, _ = CLIP2VideoConfig.get_config_dict(pretrained_model_name_or_path, **hub_kwargs)
    except (OSError, ValueError):
        return False
    return config_dict.get("model_type") == CLIP2VideoConfig.model_type


def _one_video_mask(video_mask: torch.Tensor | None, padding_mask_videos: torch.Tensor | None) -> torch.Tensor | None:
    if padding_mask_videos is None:
        return video_mask
    if video_mask is None or is_tracing(video_mask):  # torch.equal reads values: not traceable
        return padding_mask_videos
    if not torch.equal(video_mask.bool(), padding_mask_videos.bool()):
        raise ValueError("video_mask and padding_mask_videos name the same mask but differ: give one of them.")
    return padding_mask_videos


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of `values` (batch, N, D) where `mask` (batch, N) is True."""
    weights = mask.unsqueeze(-1).to(values.dtype)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def symmetric_contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """InfoNCE in both directions for a square score matrix whose diagonal holds the matching pairs."""
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


__all__ = [
    "CLIP2VideoModel",
    "CLIP2VideoOutput",
    "CLIP2VideoTextOutput",
    "CLIP2VideoVideoOutput",
    "CLIP2VideoTemporalAlignmentBlock",
    "CLIP2VideoTemporalDifferenceBlock",
    "contrastive_loss",
    "similarity_logits",
]

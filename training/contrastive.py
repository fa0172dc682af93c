"""The paper's contrastive loss over the global batch of all processes.

Each process embeds its share of the batch; the embeddings are all-gathered *with* their gradients, every process
computes the same loss over the global batch (every caption against every video of every process), and the gradient
reaching each process's own embeddings is the sum of what all processes send back. After DDP averages the parameter
gradients, training on N processes of B pairs computes the loss and gradients of one process on N * B pairs.
(`accelerator.gather` carries no gradient: with it the other processes' videos would be constant negatives.)
"""

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from transformers.utils import ModelOutput

from clip2video.modeling_clip2video.modeling_clip2video import (
    CLIP2VideoTextOutput,
    CLIP2VideoVideoOutput,
    contrastive_loss,
    similarity_logits,
)


class _AllGatherWithGradient(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every process's gradient for this process's slice.

    Built from all_gather and all_reduce only, which every backend (gloo included) supports; equal slice sizes on
    all processes are required (the training data loader drops the last incomplete batch).

    Why not `torch.distributed.nn.functional.all_gather`, which has the same gradient: torch 2.14 deprecates it (a
    `FutureWarning` on every call, pointing to the private `torch.distributed._functional_collectives`), and off NCCL
    its backward emulates reduce-scatter with an all-to-all per step. This is 15 lines over public collectives, and
    `tests/test_training_distributed.py` checks its gradients against one process on the whole batch."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.local_size = dist.get_rank(), local.shape[0]
        gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, local.contiguous())
        return torch.cat(gathered, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad_output = grad_output.contiguous()
        dist.all_reduce(grad_output, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.local_size
        return grad_output[start : start + ctx.local_size]


def gather_with_gradient(local: torch.Tensor) -> torch.Tensor:
    """`[local_batch, ...]` -> `[world_size * local_batch, ...]`, in process order; the identity on one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    return _AllGatherWithGradient.apply(local)


@dataclass
class ContrastiveEmbeddings(ModelOutput):
    """What `ContrastiveEmbedder` returns for the captions and / or videos it is given (the fields of the side not
    given are None). (A `ModelOutput`, so DDP and accelerate's mixed precision see its tensors.)

    text_embeds, video_embeds (`[batch, embedding_dim]`): the retrieval embeddings (`pooler_output` of
        `get_text_features` / `get_video_features`), whose dot product times `logit_scale.exp()` is the model's
        score; evaluation ranks with them.
    text_global, video_global, text_aligned, video_aligned (`[batch, projection_dim]`, L2-normalised): the parts
        the loss scores with; the aligned ones exist with the Temporal Alignment Block only.
    logit_scale: the log of the inverse temperature, a scalar, capped (see `clamp_logit_scale`).
    """

    text_embeds: torch.Tensor | None = None
    video_embeds: torch.Tensor | None = None
    text_global: torch.Tensor | None = None
    video_global: torch.Tensor | None = None
    text_aligned: torch.Tensor | None = None
    video_aligned: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None


# CLIP's bound on the inverse temperature (100).
MAX_LOGIT_SCALE = math.log(100.0)


def make_logit_scale_shardable(model: nn.Module) -> None:
    """FSDP2 (`fully_shard`) refuses scalar parameters, and CLIP's `logit_scale` is one: hold it as a 1-element
    vector instead (the same value and gradient; every use broadcasts). `scalar_logit_scale` restores the shape in a
    state dict before saving, so checkpoints keep the model's own layout."""
    if model.logit_scale.ndim == 0:
        model.logit_scale = nn.Parameter(model.logit_scale.detach().reshape(1))


def scalar_logit_scale(state_dict: dict) -> dict:
    """The inverse of `make_logit_scale_shardable` on a state dict (keys with or without the wrapper's prefix)."""
    return {
        name: tensor.reshape(()) if name.endswith("logit_scale") and tensor.shape == (1,) else tensor
        for name, tensor in state_dict.items()
    }


class ContrastiveEmbedder(nn.Module):
    """Wraps a `CLIP2VideoModel` so that the module DDP / FSDP / DeepSpeed runs returns the embeddings the loss needs,
    and the loss itself is computed after the all-gather. (DDP only synchronises gradients of modules run through its
    forward, and FSDP only gathers sharded parameters there: evaluation goes through it too.)

    Training gives matching captions and videos and scores `global_contrastive_loss` of the output; evaluation gives
    captions only, or videos only, and ranks with `text_embeds` / `video_embeds`. Either way one output type,
    `ContrastiveEmbeddings`.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        # FSDP's auto-wrap policy reads the split boundaries from the module it is given.
        self._no_split_modules = list(getattr(model, "_no_split_modules", None) or [])

    def forward(self, input_ids=None, attention_mask=None, pixel_values_videos=None, video_mask=None
                ) -> ContrastiveEmbeddings:
        if input_ids is None and pixel_values_videos is None:
            raise ValueError("ContrastiveEmbedder needs captions (input_ids), videos (pixel_values_videos) or both")
        # The loss sees the clamped scale whatever the wrapper does to the parameter (see `clamp_logit_scale`).
        logit_scale = self.model.logit_scale.clamp(max=MAX_LOGIT_SCALE)
        output = ContrastiveEmbeddings(logit_scale=logit_scale)
        if input_ids is not None:
            text = self.model.get_text_features(input_ids, attention_mask, return_dict=True)
            output.text_embeds, output.text_global, output.text_aligned = (
                text.pooler_output, text.global_embeds, text.aligned_embeds
            )
        if pixel_values_videos is not None:
            video = self.model.get_video_features(pixel_values_videos, video_mask, return_dict=True)
            output.video_embeds, output.video_global, output.video_aligned = (
                video.pooler_output, video.global_embeds, video.aligned_embeds
            )
        return output


def global_contrastive_loss(embeddings: ContrastiveEmbeddings, global_similarity_weight: float) -> torch.Tensor:
    """The paper's loss (symmetric InfoNCE on the global similarity, plus, with the Temporal Alignment Block, on the
    aligned similarity, weighted `w` and `1 - w`) over the batch gathered from all processes."""
    text = CLIP2VideoTextOutput(
        global_embeds=gather_with_gradient(embeddings.text_global),
        aligned_embeds=None if embeddings.text_aligned is None else gather_with_gradient(embeddings.text_aligned),
    )
    video = CLIP2VideoVideoOutput(
        global_embeds=gather_with_gradient(embeddings.video_global),
        aligned_embeds=None if embeddings.video_aligned is None else gather_with_gradient(embeddings.video_aligned),
    )
    _, global_logits, aligned_logits = similarity_logits(text, video, embeddings.logit_scale, global_similarity_weight)
    return contrastive_loss(global_logits, aligned_logits, global_similarity_weight)


def clamp_logit_scale(embedder: nn.Module):
    """CLIP's bound on the temperature, applied in place to the prepared module's own parameter (a DTensor shard
    under FSDP2, a view under FSDP with original parameters: clamping elementwise is right for every piece). The
    loss also clamps in the forward, which covers wrappers that hide the parameter."""
    with torch.no_grad():
        for name, parameter in embedder.named_parameters():
            if name.endswith("logit_scale"):
                parameter.clamp_(max=MAX_LOGIT_SCALE)

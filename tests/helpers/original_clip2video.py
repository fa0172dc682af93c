"""An independent re-statement of what the authors' CLIP2Video code computes, for testing the port against it.

It works on a state dict in the authors' format (OpenAI CLIP under `clip.*`, `transformerClip`, `frame2t_attention`,
`actionClip`, ...) with plain tensor operations in the authors' layout (sequence-first, packed q/k/v, attention masks
tiled per head the way their `ResidualAttentionBlock` tiles them, LayerNorm written out with its epsilon inside the
square root), so it shares no code with `modeling_clip2video`. It includes the authors' padding behaviour, so it
only agrees with the port on videos without padding frames.
"""

import torch
import torch.nn.functional as F


FLAG_DEFAULTS = {
    "sim_type": "seqTransf",
    "temporal_type": "TDB",
    "temporal_proj": "sigmoid_selfA",
    "center_type": "TAB",
    "centerK": 5,
    "center_weight": 0.5,
    "center_proj": "TAB_TDB",
    "cross_num_hidden_layers": 4,
}


# ----------------------------------------------------------------------------------------------------------------
# Random checkpoints in the authors' format
# ----------------------------------------------------------------------------------------------------------------


def _resblocks(prefix, width, layers, generator, mlp_ratio=4):
    tensors = {}
    for i in range(layers):
        p = f"{prefix}.{i}"
        shapes = {
            "attn.in_proj_weight": (3 * width, width),
            "attn.in_proj_bias": (3 * width,),
            "attn.out_proj.weight": (width, width),
            "attn.out_proj.bias": (width,),
            "ln_1.weight": (width,),
            "ln_1.bias": (width,),
            "mlp.c_fc.weight": (mlp_ratio * width, width),
            "mlp.c_fc.bias": (mlp_ratio * width,),
            "mlp.c_proj.weight": (width, mlp_ratio * width),
            "mlp.c_proj.bias": (width,),
            "ln_2.weight": (width,),
            "ln_2.bias": (width,),
        }
        for name, shape in shapes.items():
            fan_in = shape[-1]
            if name.startswith("ln"):
                value = 1.0 + 0.1 * torch.randn(shape, generator=generator) if name.endswith("weight") else 0.1 * torch.randn(shape, generator=generator)
            else:
                value = torch.randn(shape, generator=generator) * fan_in**-0.5
            tensors[f"{p}.{name}"] = value
    return tensors


def random_original_checkpoint(
    *,
    embed_dim=128,
    vision_width=128,
    vision_layers=2,
    patch_size=16,
    image_size=32,
    text_width=None,
    text_layers=2,
    context_length=77,
    vocab_size=100,
    seed=0,
    half_precision_clip=True,
    **flags,
):
    """A state dict with every parameter random, laid out like the authors' `CLIP2Video.state_dict()` for `flags`.

    With `half_precision_clip`, CLIP's linear, conv and projection weights are float16, as in the released files."""
    flags = {**FLAG_DEFAULTS, **flags}
    text_width = text_width or embed_dim
    g = torch.Generator().manual_seed(seed)
    sd = {}
    grid = image_size // patch_size
    sd["clip.visual.conv1.weight"] = torch.randn(vision_width, 3, patch_size, patch_size, generator=g) * 0.05
    sd["clip.visual.class_embedding"] = torch.randn(vision_width, generator=g) * vision_width**-0.5
    sd["clip.visual.positional_embedding"] = torch.randn(grid * grid + 1, vision_width, generator=g) * vision_width**-0.5
    for ln in ("ln_pre", "ln_post"):
        sd[f"clip.visual.{ln}.weight"] = 1 + 0.1 * torch.randn(vision_width, generator=g)
        sd[f"clip.visual.{ln}.bias"] = 0.1 * torch.randn(vision_width, generator=g)
    sd.update(_resblocks("clip.visual.transformer.resblocks", vision_width, vision_layers, g))
    sd["clip.visual.proj"] = torch.randn(vision_width, embed_dim, generator=g) * vision_width**-0.5
    sd["clip.positional_embedding"] = torch.randn(context_length, text_width, generator=g) * 0.01
    sd.update(_resblocks("clip.transformer.resblocks", text_width, text_layers, g))
    sd["clip.token_embedding.weight"] = torch.randn(vocab_size, text_width, generator=g) * 0.02
    sd["clip.ln_final.weight"] = 1 + 0.1 * torch.randn(text_width, generator=g)
    sd["clip.ln_final.bias"] = 0.1 * torch.randn(text_width, generator=g)
    sd["clip.text_projection"] = torch.randn(text_width, embed_dim, generator=g) * text_width**-0.5
    sd["clip.logit_scale"] = torch.tensor(4.6052) + 0.01 * torch.randn((), generator=g)
    if half_precision_clip:
        for key, value in sd.items():
            if value.dim() >= 2 and "embedding" not in key and not key.endswith("positional_embedding"):
                sd[key] = value.half()

    if flags["sim_type"] == "seqTransf":
        sd["frame_position_embeddings.weight"] = torch.randn(context_length, embed_dim, generator=g) * 0.1
        sd.update(_resblocks("transformerClip.resblocks", embed_dim, flags["cross_num_hidden_layers"], g))
    if flags["temporal_proj"] == "sigmoid_mlp":
        sd["frame2t_projection"] = torch.randn(embed_dim, embed_dim, generator=g) * embed_dim**-0.5
    elif flags["temporal_proj"] == "sigmoid_selfA":
        sd.update(_resblocks("frame2t_attention.resblocks", embed_dim, 1, g))
    if flags["temporal_type"] == "TDB":
        sd["type_position_embeddings.weight"] = torch.randn(2, embed_dim, generator=g) * 0.1
    sd["trans_layernorm.weight"] = 1 + 0.1 * torch.randn(embed_dim, generator=g)
    sd["trans_layernorm.bias"] = 0.1 * torch.randn(embed_dim, generator=g)
    if flags["center_type"] == "TAB":
        sd["weight_center"] = torch.randn(flags["centerK"], embed_dim, generator=g) * 64**-0.5
        sd["emb_center"] = torch.randn(flags["centerK"], embed_dim, generator=g) * 64**-0.5
        if flags["center_proj"] in ("TAB", "TAB_TDB"):
            sd.update(_resblocks("actionClip.resblocks", embed_dim, 1, g))
    return sd


# ----------------------------------------------------------------------------------------------------------------
# The authors' computation
# ----------------------------------------------------------------------------------------------------------------


def _tf_layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    variance = (x - mean).pow(2).mean(-1, keepdim=True)
    return weight * ((x - mean) / torch.sqrt(variance + eps)) + bias


def _quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def _block(sd, prefix, x, attn_mask, ln_eps):
    """One residual attention block on x of shape (L, N, D), OpenAI/authors' layout."""
    width = x.shape[-1]
    heads = width // 64

    def ln(y, name):
        if ln_eps == 1e-12:
            return _tf_layer_norm(y, sd[f"{prefix}.{name}.weight"], sd[f"{prefix}.{name}.bias"], ln_eps)
        return F.layer_norm(y, (width,), sd[f"{prefix}.{name}.weight"], sd[f"{prefix}.{name}.bias"], ln_eps)

    h = ln(x, "ln_1")
    attended, _ = F.multi_head_attention_forward(
        h, h, h, width, heads,
        sd[f"{prefix}.attn.in_proj_weight"], sd[f"{prefix}.attn.in_proj_bias"],
        None, None, False, 0.0,
        sd[f"{prefix}.attn.out_proj.weight"], sd[f"{prefix}.attn.out_proj.bias"],
        training=False, need_weights=False, attn_mask=attn_mask,
    )
    x = x + attended
    h = ln(x, "ln_2")
    h = F.linear(h, sd[f"{prefix}.mlp.c_fc.weight"], sd[f"{prefix}.mlp.c_fc.bias"])
    h = F.linear(_quick_gelu(h), sd[f"{prefix}.mlp.c_proj.weight"], sd[f"{prefix}.mlp.c_proj.bias"])
    return x + h


def _temporal_transformer(sd, prefix, x, mask, layers):
    """The authors' temporal transformer: x (N, L, D) batch-first in, mask (N, L) of 0/1 frames."""
    heads = x.shape[-1] // 64
    extended = (1.0 - mask.float().unsqueeze(1)) * -1000000.0
    extended = extended.expand(-1, mask.size(1), -1)
    # The authors tile the (N, L, L) mask as `repeat(heads, 1, 1)`, whereas attention expects batch-major order.
    tiled = extended.repeat(heads, 1, 1)
    h = x.permute(1, 0, 2)
    for i in range(layers):
        h = _block(sd, f"{prefix}.{i}", h, tiled, ln_eps=1e-12)
    return h.permute(1, 0, 2)


def _encode_frames(sd, video):
    """video (B, T, 3, H, W) -> projected CLS embeddings (B, T, E)."""
    b, t = video.shape[:2]
    x = video.reshape(b * t, *video.shape[2:])
    x = F.conv2d(x, sd["clip.visual.conv1.weight"], stride=sd["clip.visual.conv1.weight"].shape[-1])
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = sd["clip.visual.class_embedding"] + torch.zeros(x.shape[0], 1, x.shape[-1])
    x = torch.cat([cls, x], dim=1) + sd["clip.visual.positional_embedding"]
    width = x.shape[-1]
    x = F.layer_norm(x, (width,), sd["clip.visual.ln_pre.weight"], sd["clip.visual.ln_pre.bias"], 1e-5)
    x = x.permute(1, 0, 2)
    layers = len({k.split(".")[4] for k in sd if k.startswith("clip.visual.transformer.resblocks.")})
    for i in range(layers):
        x = _block(sd, f"clip.visual.transformer.resblocks.{i}", x, None, ln_eps=1e-5)
    x = x.permute(1, 0, 2)
    x = F.layer_norm(x, (width,), sd["clip.visual.ln_post.weight"], sd["clip.visual.ln_post.bias"], 1e-5)
    x = x @ sd["clip.visual.proj"]
    return x[:, 0, :].reshape(b, t, -1)


def _encode_text(sd, input_ids):
    """input_ids (B, L) -> (end-token embedding (B, E), every token's projected embedding (B, L, E))."""
    x = sd["clip.token_embedding.weight"][input_ids] + sd["clip.positional_embedding"][: input_ids.shape[1]]
    length = input_ids.shape[1]
    causal = torch.full((length, length), float("-inf")).triu_(1)
    x = x.permute(1, 0, 2)
    layers = len({k.split(".")[3] for k in sd if k.startswith("clip.transformer.resblocks.")})
    for i in range(layers):
        x = _block(sd, f"clip.transformer.resblocks.{i}", x, causal, ln_eps=1e-5)
    x = x.permute(1, 0, 2)
    width = x.shape[-1]
    hidden = F.layer_norm(x, (width,), sd["clip.ln_final.weight"], sd["clip.ln_final.bias"], 1e-5) @ sd["clip.text_projection"]
    return hidden[torch.arange(hidden.shape[0]), input_ids.argmax(dim=-1)], hidden


def _difference_tokens(sd, flags, frames, mask):
    """The authors' temporal difference block: returns (tokens, positions, types, token mask), 2T-1 long."""
    b, t, d = frames.shape
    positions = sd["frame_position_embeddings.weight"][:t].expand(b, t, d)
    frame_type = sd["type_position_embeddings.weight"][1].expand(b, t, d)
    difference_type = sd["type_position_embeddings.weight"][0].expand(b, t, d)
    diff = frames[:, 1:] - frames[:, :-1]
    if flags["temporal_proj"] == "sigmoid_mlp":
        diff = diff @ sd["frame2t_projection"]
        diff = 2 * torch.sigmoid(F.layer_norm(diff, (d,), sd["trans_layernorm.weight"], sd["trans_layernorm.bias"], 1e-5)) - 1
    elif flags["temporal_proj"] == "sigmoid_selfA":
        diff = diff + positions[:, 1:]
        diff = _temporal_transformer(sd, "frame2t_attention.resblocks", diff, mask[:, 1:], 1)
        diff = 2 * torch.sigmoid(F.layer_norm(diff, (d,), sd["trans_layernorm.weight"], sd["trans_layernorm.bias"], 1e-5)) - 1
    # Frames at positions 0..T-1 of the concatenation, differences at T..2T-2; interleave f0 d0 f1 d1 ... f_{T-1}.
    order = []
    for i in range(t - 1):
        order += [i, t + i]
    order.append(t - 1)
    order = torch.tensor(order)
    both = lambda a, b_: torch.cat([a, b_], dim=1).index_select(1, order)  # noqa: E731
    return (
        both(frames, diff),
        both(positions, positions),
        both(frame_type, difference_type),
        both(mask, mask),
    )


def _global_video(sd, flags, frames, mask):
    mask = mask.float()
    if flags["sim_type"] == "seqTransf" and flags["temporal_type"] == "TDB":
        tokens, positions, types, token_mask = _difference_tokens(sd, flags, frames, mask)
        out = _temporal_transformer(sd, "transformerClip.resblocks", tokens + positions + types, token_mask, flags["cross_num_hidden_layers"])
        out = out[:, 0::2] + frames
    elif flags["sim_type"] == "seqTransf":
        t = frames.shape[1]
        out = _temporal_transformer(sd, "transformerClip.resblocks", frames + sd["frame_position_embeddings.weight"][:t], mask, flags["cross_num_hidden_layers"])
        out = out + frames
    else:
        out = frames
    out = out / out.norm(dim=-1, keepdim=True)
    weights = mask.unsqueeze(-1)
    pooled = (out * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return pooled / pooled.norm(dim=-1, keepdim=True)


def _aligned(sd, flags, tokens, token_mask):
    k = flags["centerK"]
    soft = torch.softmax(tokens @ sd["weight_center"][:k].t(), dim=2)
    clusters = soft.unsqueeze(3) * (tokens.unsqueeze(2) - sd["emb_center"][:k])
    clusters = (clusters * token_mask.float()[:, :, None, None]).sum(1)
    clusters = clusters / clusters.norm(dim=-1, keepdim=True)
    clusters = clusters.mean(dim=1)
    return clusters / clusters.norm(dim=-1, keepdim=True)


def _aligned_video(sd, flags, frames, mask):
    mask = mask.float()
    tokens, token_mask = frames, mask
    if flags["center_proj"] in ("TAB", "TAB_TDB"):
        sparse, sparse_mask = frames[:, 0::2], mask[:, 0::2]
        t = sparse.shape[1]
        if flags["center_proj"] == "TAB_TDB":
            x, positions, types, x_mask = _difference_tokens(sd, flags, sparse, sparse_mask)
            x = x + positions + types
        else:
            x, x_mask = sparse + sd["frame_position_embeddings.weight"][:t], sparse_mask
        x = _temporal_transformer(sd, "actionClip.resblocks", x, x_mask, 1)
        if flags["center_proj"] == "TAB_TDB":
            x = x[:, 0::2]
        tokens = torch.cat([frames, x + sparse], dim=1)
        token_mask = torch.cat([mask, sparse_mask], dim=1)
    return _aligned(sd, flags, tokens, token_mask)


@torch.no_grad()
def original_logits(state_dict, input_ids, attention_mask, video, video_mask, **flags):
    """Text-to-video scores (B_text, B_video) as the authors' `get_inference_logits` computes them, in float32."""
    flags = {**FLAG_DEFAULTS, **flags}
    sd = {k: v.float() for k, v in state_dict.items()}
    text_global, text_tokens = _encode_text(sd, input_ids)
    frames = _encode_frames(sd, video)
    scale = sd["clip.logit_scale"].exp()
    text_global = text_global / text_global.norm(dim=-1, keepdim=True)
    logits = scale * text_global @ _global_video(sd, flags, frames, video_mask).t()
    if flags["center_type"] == "TAB":
        word_mask = attention_mask.float().clone()
        word_mask[:, 0] = 0.0
        aligned_text = _aligned(sd, flags, text_tokens, word_mask)
        aligned_video = _aligned_video(sd, flags, frames, video_mask)
        w = flags["center_weight"]
        logits = logits * w + scale * aligned_text @ aligned_video.t() * (1 - w)
    return logits

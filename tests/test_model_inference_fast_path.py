"""The CLIP layers' inference path (`CLIP2VideoAttention`, `CLIP2VideoMLP`): without gradients, on batches of at
least `_FUSED_PROJECTION_MIN_TOKENS` tokens, query, key and value come from one matmul on the concatenated weights
and QuickGELU runs in place. It must give transformers' numbers, which the same layers compute with gradients."""

import torch

from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.modeling_clip2video.modeling_clip2video import _FUSED_PROJECTION_MIN_TOKENS, CLIP2VideoAttention
from tests.helpers.models import text_inputs, tiny_config, video_inputs


def run_counting_separate_projections(model, inputs, grad: bool):
    """The model's outputs and how many times each tower's separate query projection ran."""
    calls = {"text_model": 0, "vision_model": 0}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, CLIP2VideoAttention) and name.split(".")[0] in calls:
            tower = name.split(".")[0]
            count = lambda *_, tower=tower: calls.__setitem__(tower, calls[tower] + 1)  # noqa: E731
            hooks.append(module.q_proj.register_forward_hook(count))
    try:
        with torch.set_grad_enabled(grad):
            outputs = model(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return outputs, calls


def test_fused_projection_and_in_place_quick_gelu_give_the_layers_numbers():
    torch.manual_seed(0)
    model = CLIP2VideoModel(tiny_config()).eval()
    # 40 padded captions of 32 tokens (1,280 tokens, causal and padding masks) and 242 real frames of 5 tokens.
    input_ids, attention_mask = text_inputs(lengths=[30 - index % 25 for index in range(40)])
    pixels, video_mask = video_inputs(batch=4, frames=64, real_frames=[64, 64, 64, 50])
    assert input_ids.numel() >= _FUSED_PROJECTION_MIN_TOKENS and video_mask.sum() * 5 >= _FUSED_PROJECTION_MIN_TOKENS
    inputs = (input_ids, attention_mask, pixels, video_mask)

    fast, fast_calls = run_counting_separate_projections(model, inputs, grad=False)
    reference, reference_calls = run_counting_separate_projections(model, inputs, grad=True)

    assert fast_calls == {"text_model": 0, "vision_model": 0}  # both towers took the fused path
    assert reference_calls == {"text_model": 4, "vision_model": 2}  # one call per layer: transformers' path
    pairs = {
        "logits_per_text": (fast.logits_per_text, reference.logits_per_text),
        "frame_embeds": (fast.frame_embeds, reference.frame_embeds),
        "vision last_hidden_state": (
            fast.vision_model_output.last_hidden_state, reference.vision_model_output.last_hidden_state
        ),
        "text last_hidden_state": (
            fast.text_model_output.last_hidden_state, reference.text_model_output.last_hidden_state
        ),
    }
    for name, (got, want) in pairs.items():
        assert ((got - want.detach()).abs().max() / want.abs().max()).item() <= 1e-6, name


def test_small_batches_and_gradients_keep_transformers_path():
    torch.manual_seed(0)
    model = CLIP2VideoModel(tiny_config()).eval()
    inputs = (*text_inputs(), *video_inputs(batch=2, frames=4))  # 36 text and 40 vision tokens

    _, calls = run_counting_separate_projections(model, inputs, grad=False)

    assert calls == {"text_model": 4, "vision_model": 2}

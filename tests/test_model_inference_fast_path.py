"""The CLIP layers' inference path (`CLIP2VideoAttention`, `CLIP2VideoMLP`): without gradients, query, key and value
come from one matmul on the concatenated weights (batches of at least `_FUSED_PROJECTION_MIN_TOKENS` tokens), and in
float32 QuickGELU is computed as SiLU on matmuls scaled by 1.702 (in bf16 / fp16 in place). It must give
transformers' numbers (`CLIPAttention`, `CLIPMLP`, which the same layers compute with gradients) within float
rounding, follow the weights when they change, and leave hooked or replaced linear layers and training alone."""

import pytest
import torch
import torch.nn.functional as F
from accelerate import cpu_offload
from torch.overrides import TorchFunctionMode
from transformers import CLIPVisionConfig
from transformers.models.clip.modeling_clip import CLIPAttention, CLIPMLP

from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.modeling_clip2video.modeling_clip2video import (
    _FUSED_PROJECTION_MIN_TOKENS,
    CLIP2VideoAttention,
    CLIP2VideoMLP,
)
from tests.helpers.models import WIDTH, text_inputs, tiny_config, video_inputs


class CountFastPaths(TorchFunctionMode):
    """Counts the calls that only the fast paths make: a linear layer on the concatenated query/key/value weights
    (3 x width rows) and SiLU (transformers' QuickGELU calls sigmoid)."""

    def __init__(self, width: int):
        super().__init__()
        self.width, self.fused_projections, self.silus = width, 0, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and args[1].shape[0] == 3 * self.width:
            self.fused_projections += 1
        if func is F.silu:
            self.silus += 1
        return func(*args, **kwargs)


def relative_difference(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want.detach()).abs().max() / want.detach().abs().max()).item()


HIDDEN = 128


def same_layers(seed: int = 0):
    """An attention and an MLP of each kind with the same weights (transformers' initialisation), with ViT-B/32's
    head width and MLP ratio."""
    config = CLIPVisionConfig(hidden_size=HIDDEN, intermediate_size=4 * HIDDEN, num_attention_heads=2)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    attention, mlp = CLIPAttention(config).eval(), CLIPMLP(config).eval()
    ours_attention, ours_mlp = CLIPAttention(config).eval(), CLIPMLP(config).eval()
    ours_attention.load_state_dict(attention.state_dict())
    ours_mlp.load_state_dict(mlp.state_dict())
    ours_attention.__class__, ours_mlp.__class__ = CLIP2VideoAttention, CLIP2VideoMLP
    return config, (attention, ours_attention), (mlp, ours_mlp)


def test_the_model_takes_the_fast_paths_and_gives_the_layers_numbers():
    torch.manual_seed(0)
    model = CLIP2VideoModel(tiny_config()).eval()
    # 40 padded captions of 32 tokens (1,280 tokens, causal and padding masks) and 242 real frames of 5 tokens.
    input_ids, attention_mask = text_inputs(lengths=[30 - index % 25 for index in range(40)])
    pixels, video_mask = video_inputs(batch=4, frames=64, real_frames=[64, 64, 64, 50])
    assert input_ids.numel() >= _FUSED_PROJECTION_MIN_TOKENS and video_mask.sum() * 5 >= _FUSED_PROJECTION_MIN_TOKENS
    inputs = (input_ids, attention_mask, pixels, video_mask)

    with torch.no_grad(), CountFastPaths(WIDTH) as fast_calls:
        fast = model(*inputs)
    with CountFastPaths(WIDTH) as reference_calls:
        reference = model(*inputs)

    # Every MLP: the text tower's 4 layers, the vision tower's 2, the temporal transformer's 2, the TAB's frame
    # encoder's 1 and the TDB's attention layer, which runs for the global and the aligned embeddings (2); the fused
    # projection in the towers' layers only (the temporal ones see a few dozen tokens).
    assert (fast_calls.fused_projections, fast_calls.silus) == (6, 11)
    assert (reference_calls.fused_projections, reference_calls.silus) == (0, 0)
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
        assert relative_difference(got, want) <= 1e-6, name


def test_small_batches_keep_the_separate_projections_and_gradients_keep_transformers_path():
    torch.manual_seed(0)
    model = CLIP2VideoModel(tiny_config()).eval()
    inputs = (*text_inputs(lengths=(10, 6)), *video_inputs(batch=2, frames=4))  # 24 text and 40 vision tokens

    with torch.no_grad(), CountFastPaths(WIDTH) as small:
        model(*inputs)
    with CountFastPaths(WIDTH) as training:
        model.train()(*inputs, return_loss=True).loss.backward()

    assert (small.fused_projections, small.silus) == (0, 11)  # the MLPs copy no weights: fast at any size
    assert (training.fused_projections, training.silus) == (0, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attention_and_mlp_match_transformers_layers(dtype):
    _, (attention, ours_attention), (mlp, ours_mlp) = same_layers()
    for module in (attention, ours_attention, mlp, ours_mlp):
        module.to(dtype)
    hidden_states = torch.randn(2, 600, HIDDEN, dtype=dtype)  # 1,200 tokens: the fused projection's size

    with torch.no_grad(), CountFastPaths(HIDDEN) as calls:
        got_attention, _ = ours_attention(hidden_states)
        got_mlp = ours_mlp(hidden_states)
        want_attention, _ = attention(hidden_states)
        want_mlp = mlp(hidden_states)

    assert (calls.fused_projections, calls.silus) == (1, 1)
    assert relative_difference(got_attention, want_attention) <= 1e-6
    assert relative_difference(got_mlp, want_mlp) <= (1e-6 if dtype == torch.float32 else 1e-14)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_mlp_keeps_transformers_values_bit_for_bit(dtype):
    _, _, (mlp, ours_mlp) = same_layers()
    mlp.to(dtype), ours_mlp.to(dtype)
    hidden_states = torch.randn(300, HIDDEN, dtype=dtype)

    with torch.no_grad(), CountFastPaths(HIDDEN) as calls:
        got, want = ours_mlp(hidden_states), mlp(hidden_states)

    assert calls.silus == 0
    assert torch.equal(got, want)


def test_mlp_under_autocast_keeps_transformers_values_bit_for_bit():
    _, _, (mlp, ours_mlp) = same_layers()
    hidden_states = torch.randn(300, HIDDEN)

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), CountFastPaths(HIDDEN) as calls:
        got, want = ours_mlp(hidden_states), mlp(hidden_states)

    assert calls.silus == 0
    assert torch.equal(got, want)


def test_outputs_follow_the_weights_when_they_change_after_a_forward():
    """Nothing derived from the weights may outlive them: in-place updates through `.data` (which bypass the
    version counter, as PEFT's merge does), `load_state_dict`, an optimiser step and replaced tensors are all seen."""
    _, (attention, ours_attention), (mlp, ours_mlp) = same_layers()
    hidden_states = torch.randn(2, 600, HIDDEN)

    def check():
        with torch.no_grad():
            assert relative_difference(ours_attention(hidden_states)[0], attention(hidden_states)[0]) <= 1e-6
            assert relative_difference(ours_mlp(hidden_states), mlp(hidden_states)) <= 1e-6

    check()
    for reference, ours in ((attention, ours_attention), (mlp, ours_mlp)):
        first = ours.q_proj if isinstance(ours, CLIPAttention) else ours.fc1
        with torch.no_grad():
            first.weight.data.mul_(1.5)  # no version bump
        reference.load_state_dict(ours.state_dict())
        check()

        state = {name: tensor + 0.01 for name, tensor in ours.state_dict().items()}
        ours.load_state_dict(state), reference.load_state_dict(state)
        check()

        first.weight.data = first.weight.data.clone().neg_()  # a new tensor behind the same parameter
        reference.load_state_dict(ours.state_dict())
        check()

        optimizer = torch.optim.SGD(ours.parameters(), lr=0.1)
        output = ours(hidden_states)
        (output[0] if isinstance(output, tuple) else output).square().mean().backward()
        optimizer.step()
        reference.load_state_dict(ours.state_dict())
        check()


def test_gradients_are_transformers_gradients():
    _, (attention, ours_attention), (mlp, ours_mlp) = same_layers()
    hidden_states = torch.randn(2, 600, HIDDEN)

    for reference, ours in ((attention, ours_attention), (mlp, ours_mlp)):
        outputs = []
        for module in (reference, ours):
            inputs = hidden_states.clone().requires_grad_()
            output = module(inputs)
            (output[0] if isinstance(output, tuple) else output).square().mean().backward()
            outputs.append((output, inputs.grad, [parameter.grad for parameter in module.parameters()]))
        (want, want_input_grad, want_grads), (got, got_input_grad, got_grads) = outputs
        assert torch.equal(got_input_grad, want_input_grad)
        assert all(torch.equal(g, w) for g, w in zip(got_grads, want_grads))


def test_hooked_linear_layers_run_through_their_modules_untouched():
    """A forward hook on a projection or MLP layer (a probe, an adapter) sees its layer run, with the output the
    layer computed: the fast paths, which call the matmuls themselves and write in place, stand aside."""
    _, (attention, ours_attention), (mlp, ours_mlp) = same_layers()
    hidden_states = torch.randn(2, 600, HIDDEN)
    seen = {}

    def keep(name):
        return lambda module, args, output: seen.__setitem__(name, (output.clone(), output))

    handles = [ours_attention.q_proj.register_forward_hook(keep("q_proj")), ours_mlp.fc1.register_forward_hook(keep("fc1"))]
    try:
        with torch.no_grad(), CountFastPaths(HIDDEN) as calls:
            got_attention, got_mlp = ours_attention(hidden_states)[0], ours_mlp(hidden_states)
    finally:
        for handle in handles:
            handle.remove()

    assert (calls.fused_projections, calls.silus) == (0, 0)
    for name, (copy, output) in seen.items():
        assert torch.equal(copy, output), f"{name}'s output was overwritten after its hook saw it"
    with torch.no_grad():
        assert torch.equal(seen["fc1"][1], mlp.fc1(hidden_states))
        assert torch.equal(got_attention, attention(hidden_states)[0])
        assert torch.equal(got_mlp, mlp(hidden_states))


def test_offloaded_mlp_takes_the_same_path_inside_accelerates_hooks():
    """Under accelerate's offload hooks the weights wait on the meta device until the hook loads them: the SiLU
    form runs between the hook's two halves, so a device-mapped model gives the plain model's numbers exactly."""
    _, _, (_, ours_mlp) = same_layers()
    offloaded = CLIP2VideoMLP(ours_mlp.config)
    offloaded.load_state_dict(ours_mlp.state_dict())
    cpu_offload(offloaded, execution_device=torch.device("cpu"))
    assert offloaded.fc1.weight.device.type == "meta"
    hidden_states = torch.randn(300, HIDDEN)

    with torch.no_grad(), CountFastPaths(HIDDEN) as calls:
        got, want = offloaded(hidden_states), ours_mlp(hidden_states)

    assert calls.silus == 2
    assert torch.equal(got, want)
    assert offloaded.fc1.weight.device.type == "meta"  # the hook put the weights back

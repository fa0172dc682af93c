"""`CLIP2VideoModel.compile_vision_tower_for_inference`: the frozen, compiled vision tower scores like eager."""

import copy

import pytest
import torch

from clip2video.modeling_clip2video import CLIP2VideoModel
from tests.helpers.models import text_inputs, tiny_config, video_inputs


@pytest.mark.slow
def test_compiled_tower_matches_eager_within_1e_5_on_a_padded_batch():
    torch.manual_seed(0)
    eager = CLIP2VideoModel(tiny_config()).eval()
    model = copy.deepcopy(eager).compile_vision_tower_for_inference()
    pixels, mask = video_inputs(batch=3, frames=6, real_frames=[6, 4, 1])
    input_ids, attention_mask = text_inputs()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    try:
        with torch.inference_mode():
            compiled = model(input_ids, attention_mask, pixels, mask)
            expected = eager(input_ids, attention_mask, pixels, mask)
            for name in ("logits_per_text", "video_embeds", "frame_embeds"):
                got, want = getattr(compiled, name), getattr(expected, name)
                assert ((got - want).abs().max() / want.abs().max()).item() <= 1e-5, name
            assert model.state_dict().keys() == eager.state_dict().keys()
        # The tower did run compiled (one graph), so the comparison above is not eager against eager.
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    finally:
        torch._dynamo.reset()

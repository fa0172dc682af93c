"""Forms the authors' checkpoint files come in: a state dict saved from `DistributedDataParallel` (every key under
`module.`) converts to the same model as the plain one, and float16 tensors (as released) convert to float32."""

import torch

from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.modeling_clip2video.convert_original_checkpoint import convert_original_checkpoint
from tests.helpers.models import text_inputs
from tests.helpers.original_clip2video import original_logits, random_original_checkpoint


def test_distributed_prefix_converts_like_the_plain_checkpoint(tmp_path):
    state_dict = random_original_checkpoint(cross_num_hidden_layers=2, seed=4)
    torch.save({f"module.{key}": value for key, value in state_dict.items()}, tmp_path / "ddp.bin")
    convert_original_checkpoint(tmp_path / "ddp.bin", tmp_path / "converted", cross_num_hidden_layers=2)
    model = CLIP2VideoModel.from_pretrained(tmp_path / "converted").eval()
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())

    input_ids, attention_mask = text_inputs(lengths=(9, 4))
    pixels = torch.randn(3, 6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(3, 6, dtype=torch.long)
    with torch.no_grad():
        ours = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask)
    reference = original_logits(state_dict, input_ids, attention_mask, pixels, mask, cross_num_hidden_layers=2)
    torch.testing.assert_close(ours.logits_per_text, reference, rtol=1e-5, atol=1e-5 * reference.abs().max().item())

"""The converter for the authors' checkpoints, checked against an independent statement of the authors' computation
(`helpers/original_clip2video.py`) on checkpoints in their format with every parameter random."""

import sys

import pytest
import torch

from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.modeling_clip2video.convert_original_checkpoint import ConversionError, convert_original_checkpoint
from tests.helpers.models import END, START, text_inputs
from tests.helpers.original_clip2video import original_logits, random_original_checkpoint
from tests.helpers.processes import run_command


# Every variant the authors' code supports, in the authors' flags.
ORIGINAL_VARIANTS = {
    "meanP": dict(sim_type="meanP", temporal_type="", temporal_proj="", center_type="", center_proj=""),
    "seqTransf": dict(temporal_type="", temporal_proj="", center_type="", center_proj=""),
    "TDB": dict(temporal_proj="", center_type="", center_proj=""),
    "TDB_sigmoid_mlp": dict(temporal_proj="sigmoid_mlp", center_type="", center_proj=""),
    "TDB_sigmoid_selfA": dict(temporal_proj="sigmoid_selfA", center_type="", center_proj=""),
    "TAB": dict(temporal_type="", temporal_proj="", center_proj="TAB"),
    "TAB_without_layer": dict(center_proj=""),
    "TAB_TDB_mlp": dict(temporal_proj="sigmoid_mlp"),
    "TAB_TDB_K5": dict(),
    "TAB_TDB_K7": dict(centerK=7),
}


def videos_without_padding(batch=4, frames=7, size=32, seed=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, size, size, generator=g), torch.ones(batch, frames, dtype=torch.long)


def assert_scores_match(ours, reference):
    assert ours.shape == reference.shape
    scale = reference.abs().max().item()
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5 * scale)


def convert(tmp_path, state_dict, **flags):
    checkpoint = tmp_path / "pytorch_model.bin.2"
    torch.save(state_dict, checkpoint)
    convert_original_checkpoint(checkpoint, tmp_path / "converted", **flags)
    return CLIP2VideoModel.from_pretrained(tmp_path / "converted").eval()


@pytest.mark.parametrize("variant", list(ORIGINAL_VARIANTS))
def test_converted_checkpoint_scores_equal_the_originals(tmp_path, variant):
    flags = ORIGINAL_VARIANTS[variant]
    state_dict = random_original_checkpoint(**flags, cross_num_hidden_layers=2, seed=len(variant))
    model = convert(tmp_path, state_dict, **flags, cross_num_hidden_layers=2)
    input_ids, attention_mask = text_inputs(lengths=(12, 7, 3))
    pixels, mask = videos_without_padding()
    with torch.no_grad():
        ours = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask)
    reference = original_logits(state_dict, input_ids, attention_mask, pixels, mask, **flags, cross_num_hidden_layers=2)
    assert_scores_match(ours.logits_per_text, reference)


@pytest.mark.slow
def test_cli_converts_a_released_size_checkpoint_with_the_msrvtt_defaults(tmp_path):
    """512-wide temporal modules, eight heads, four temporal layers, float16 CLIP tensors: the released layout."""
    state_dict = random_original_checkpoint(
        embed_dim=512, vision_width=128, text_width=512, text_layers=1, vision_layers=1, vocab_size=49408, seed=11
    )
    assert state_dict["clip.visual.proj"].dtype == torch.float16
    checkpoint = tmp_path / "pytorch_model.bin.2"
    torch.save(state_dict, checkpoint)
    result = run_command(
        [sys.executable, "-m", "clip2video.modeling_clip2video.convert_original_checkpoint",
         "--checkpoint", checkpoint, "--output_dir", tmp_path / "out"],
        timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "temporal alignment block=True (K=5, difference_transformer)" in result.stdout
    model = CLIP2VideoModel.from_pretrained(tmp_path / "out").eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    input_ids, attention_mask = text_inputs(lengths=(32, 9, 4))
    input_ids[input_ids == START], input_ids[input_ids == END] = 49406, 49407
    pixels, mask = videos_without_padding(batch=3, frames=12)
    with torch.no_grad():
        ours = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask)
    assert_scores_match(ours.logits_per_text, original_logits(state_dict, input_ids, attention_mask, pixels, mask))


def test_port_fixes_the_originals_padding_defect(tmp_path):
    """The authors tile attention masks in the wrong order and leave a difference token beside the first padded
    frame unmasked, so their score for a padded video depends on its batch; the port's does not."""
    state_dict = random_original_checkpoint(seed=3, cross_num_hidden_layers=2)
    model = convert(tmp_path, state_dict, cross_num_hidden_layers=2)
    input_ids, attention_mask = text_inputs(lengths=(8, 5))
    pixels, mask = videos_without_padding(batch=2, frames=8)
    mask[1, 5:] = 0
    pixels[1, 5:] = 0
    alone = original_logits(state_dict, input_ids, attention_mask, pixels[1:], mask[1:], cross_num_hidden_layers=2)
    in_batch = original_logits(state_dict, input_ids, attention_mask, pixels, mask, cross_num_hidden_layers=2)[:, 1:]
    assert (alone - in_batch).abs().max() > 1e-3
    with torch.no_grad():
        ours_alone = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels[1:, :5], video_mask=mask[1:, :5])
        ours_in_batch = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask)
    torch.testing.assert_close(ours_in_batch.logits_per_text[:, 1:], ours_alone.logits_per_text, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Errors name the tensor or flag
# ---------------------------------------------------------------------------------------------------------------


def test_missing_tensor_is_named(tmp_path):
    state_dict = random_original_checkpoint(cross_num_hidden_layers=2)
    del state_dict["actionClip.resblocks.0.ln_1.bias"]
    with pytest.raises(ConversionError, match=r"no tensor 'actionClip\.resblocks\.0\.ln_1\.bias'"):
        convert(tmp_path, state_dict, cross_num_hidden_layers=2)


def test_unexpected_tensor_is_named(tmp_path):
    state_dict = random_original_checkpoint(cross_num_hidden_layers=2, **ORIGINAL_VARIANTS["TDB_sigmoid_selfA"])
    state_dict["weight_center"] = torch.zeros(5, 128)
    with pytest.raises(ConversionError, match=r"Unexpected tensors for this architecture: \['weight_center'\]"):
        convert(tmp_path, state_dict, cross_num_hidden_layers=2, **ORIGINAL_VARIANTS["TDB_sigmoid_selfA"])


def test_misshaped_tensor_is_named(tmp_path):
    state_dict = random_original_checkpoint(cross_num_hidden_layers=2)
    state_dict["emb_center"] = torch.zeros(5, 64)
    with pytest.raises(ConversionError, match=r"'emb_center' has shape \(5, 64\)"):
        convert(tmp_path, state_dict, cross_num_hidden_layers=2)


def test_flags_that_disagree_with_the_tensors_are_named(tmp_path):
    state_dict = random_original_checkpoint(cross_num_hidden_layers=2, centerK=7)
    with pytest.raises(ConversionError, match="7 centres .* --centerK is 5"):
        convert(tmp_path, state_dict, cross_num_hidden_layers=2)
    with pytest.raises(ConversionError, match="2 temporal layers .* --cross_num_hidden_layers is 4"):
        convert(tmp_path, state_dict, centerK=7)


@pytest.mark.slow
def test_cli_reports_errors_without_a_traceback(tmp_path):
    state_dict = random_original_checkpoint(cross_num_hidden_layers=2)
    torch.save(state_dict, tmp_path / "ckpt.bin")
    result = run_command(
        [sys.executable, "-m", "clip2video.modeling_clip2video.convert_original_checkpoint", "--checkpoint",
         tmp_path / "ckpt.bin", "--output_dir", tmp_path / "out", "--sim_type", "meanP"],
        timeout=300, check=False,
    )
    assert result.returncode == 2
    assert "error: --center_proj TAB_TDB needs --sim_type seqTransf" in result.stderr
    assert "Traceback" not in result.stderr


class _NotATensor:
    pass


def test_checkpoints_load_without_running_pickled_code(tmp_path):
    torch.save({"clip.logit_scale": _NotATensor()}, tmp_path / "evil.bin")
    with pytest.raises(Exception, match="Weights only load failed"):
        convert_original_checkpoint(tmp_path / "evil.bin", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        convert_original_checkpoint(tmp_path / "missing.bin", tmp_path / "out")

"""The global/aligned score mix at a weight other than the default 0.5, where swapping `w` and `1 - w` is invisible,
and with non-default numbers of centres: scores, retrieval embeddings and loss of the model, and checkpoints converted
from the authors' format, each against an independent computation."""

import math

import pytest
import torch

from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.modeling_clip2video.convert_original_checkpoint import convert_original_checkpoint
from tests.helpers.models import text_inputs, tiny_config, video_inputs
from tests.helpers.original_clip2video import original_logits, random_original_checkpoint

WEIGHT = 0.8


def build(num_centres: int) -> CLIP2VideoModel:
    torch.manual_seed(0)
    config = tiny_config(global_similarity_weight=WEIGHT, alignment_num_centers=num_centres)
    return CLIP2VideoModel(config).eval()


def infonce(logits: torch.Tensor) -> torch.Tensor:
    """Written out: the mean over pairs of -log softmax of the diagonal, over rows and over columns, halved."""
    rows = -torch.diagonal(torch.log_softmax(logits, dim=1)).mean()
    columns = -torch.diagonal(torch.log_softmax(logits, dim=0)).mean()
    return (rows + columns) / 2


@pytest.mark.parametrize("num_centres", [3, 7])
def test_scores_and_retrieval_embeddings_weigh_the_global_part_by_w(num_centres):
    model = build(num_centres)
    input_ids, attention_mask = text_inputs(lengths=(12, 7, 3, 9))
    pixels, mask = video_inputs(batch=3, frames=6, real_frames=[6, 4, 2])
    with torch.no_grad():
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask)
    text, video = outputs.text_model_output, outputs.vision_model_output
    scale = model.logit_scale.exp()
    global_scores = scale * text.global_embeds @ video.global_embeds.T
    aligned_scores = scale * text.aligned_embeds @ video.aligned_embeds.T
    # The two parts must disagree for the weights to matter.
    assert (global_scores - aligned_scores).abs().max() > 0.2 * global_scores.abs().max()
    expected = WEIGHT * global_scores + (1 - WEIGHT) * aligned_scores
    torch.testing.assert_close(outputs.logits_per_text, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs.logits_per_video, expected.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs.global_logits_per_text, global_scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs.aligned_logits_per_text, aligned_scores, rtol=1e-5, atol=1e-5)

    # One embedding per caption and per video, [sqrt(w) g, sqrt(1 - w) a], reproduces the scores.
    width = model.config.projection_dim
    for embeds in (text, video):
        torch.testing.assert_close(embeds.pooler_output[:, :width], math.sqrt(WEIGHT) * embeds.global_embeds)
        torch.testing.assert_close(embeds.pooler_output[:, width:], math.sqrt(1 - WEIGHT) * embeds.aligned_embeds)
    torch.testing.assert_close(scale * text.pooler_output @ video.pooler_output.T, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs.text_embeds, text.pooler_output)
    torch.testing.assert_close(outputs.video_embeds, video.pooler_output)


def test_loss_weighs_the_global_part_by_w():
    model = build(num_centres=3)
    input_ids, attention_mask = text_inputs(lengths=(10, 6, 3))
    pixels, mask = video_inputs(batch=3, frames=6, real_frames=[6, 4, 2])
    outputs = model(
        input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask, return_loss=True
    )
    global_loss = infonce(outputs.global_logits_per_text)
    aligned_loss = infonce(outputs.aligned_logits_per_text)
    assert abs(global_loss - aligned_loss) > 1e-2
    torch.testing.assert_close(outputs.loss, WEIGHT * global_loss + (1 - WEIGHT) * aligned_loss)


@pytest.mark.parametrize(
    "flags",
    [
        dict(center_weight=WEIGHT, centerK=3),
        dict(center_weight=0.3, centerK=7, temporal_proj="sigmoid_mlp"),
        dict(center_weight=WEIGHT, centerK=4, center_proj="TAB", temporal_type="", temporal_proj=""),
    ],
    ids=["TAB_TDB_w0.8_K3", "TAB_TDB_mlp_w0.3_K7", "TAB_w0.8_K4"],
)
def test_converted_checkpoint_keeps_the_weight_and_centres(tmp_path, flags):
    state_dict = random_original_checkpoint(**flags, cross_num_hidden_layers=2, seed=7)
    checkpoint = tmp_path / "pytorch_model.bin.2"
    torch.save(state_dict, checkpoint)
    convert_original_checkpoint(checkpoint, tmp_path / "converted", **flags, cross_num_hidden_layers=2)
    model = CLIP2VideoModel.from_pretrained(tmp_path / "converted").eval()
    assert model.config.global_similarity_weight == flags["center_weight"]
    assert model.config.alignment_num_centers == flags["centerK"]

    input_ids, attention_mask = text_inputs(lengths=(12, 7, 3))
    generator = torch.Generator().manual_seed(5)
    pixels = torch.randn(4, 7, 3, 32, 32, generator=generator)
    mask = torch.ones(4, 7, dtype=torch.long)
    with torch.no_grad():
        ours = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask)
    reference = original_logits(state_dict, input_ids, attention_mask, pixels, mask, **flags, cross_num_hidden_layers=2)
    complement = original_logits(
        state_dict, input_ids, attention_mask, pixels, mask,
        **{**flags, "center_weight": 1 - flags["center_weight"]}, cross_num_hidden_layers=2,
    )
    tolerance = 1e-5 * reference.abs().max().item()
    assert (reference - complement).abs().max() > 100 * tolerance  # the weight is visible in the scores
    torch.testing.assert_close(ours.logits_per_text, reference, rtol=1e-5, atol=tolerance)

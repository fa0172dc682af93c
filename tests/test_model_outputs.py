"""`get_text_features` / `get_video_features` / `forward` speak transformers 5: output objects whose `pooler_output`
is the retrieval embedding, tuples with `return_dict=False`, the towers' hidden states and attentions on request,
and per-frame embeddings without a caption."""

import math

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from clip2video.modeling_clip2video import CLIP2VideoModel
from tests.helpers.models import text_inputs, tiny_config, video_inputs

# A non-default mix and centre count: with w = 0.5 swapping w and 1 - w would be invisible.
WEIGHT = 0.8


def build(**overrides) -> CLIP2VideoModel:
    torch.manual_seed(0)
    return CLIP2VideoModel(
        tiny_config(global_similarity_weight=WEIGHT, alignment_num_centers=5, **overrides)
    ).eval()


def test_pooler_output_is_the_weighted_retrieval_embedding():
    model = build()
    input_ids, attention_mask = text_inputs()
    pixels, mask = video_inputs(batch=4, real_frames=[6, 5, 2, 1])
    with torch.no_grad():
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask)
        text = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        video = model.get_video_features(pixel_values_videos=pixels, video_mask=mask)
    assert isinstance(text, BaseModelOutputWithPooling) and isinstance(video, BaseModelOutputWithPooling)

    # The parts, computed independently: the scores are w * <g_t, g_v> + (1 - w) * <a_t, a_v>, scaled.
    scale = model.logit_scale.exp()
    expected = scale * (
        WEIGHT * text.global_embeds @ video.global_embeds.T + (1 - WEIGHT) * text.aligned_embeds @ video.aligned_embeds.T
    )
    torch.testing.assert_close(outputs.logits_per_text, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scale * text.pooler_output @ video.pooler_output.T, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        text.pooler_output, torch.cat([math.sqrt(WEIGHT) * text.global_embeds, math.sqrt(1 - WEIGHT) * text.aligned_embeds], -1)
    )
    for output, rows in ((text, 3), (video, 4)):
        torch.testing.assert_close(output.pooler_output.norm(dim=-1), torch.ones(rows))
        torch.testing.assert_close(output.global_embeds.norm(dim=-1), torch.ones(rows))
    torch.testing.assert_close(outputs.text_embeds, text.pooler_output)
    torch.testing.assert_close(outputs.video_embeds, video.pooler_output)
    # The text tower's last layer is CLIP's, unchanged.
    tower = model.text_model(input_ids=input_ids, attention_mask=attention_mask)
    torch.testing.assert_close(text.last_hidden_state, tower.last_hidden_state)


def test_without_the_alignment_block_pooler_output_is_the_global_embedding():
    model = build(use_temporal_alignment_block=False)
    pixels, mask = video_inputs(real_frames=[6, 3, 1])
    with torch.no_grad():
        video = model.get_video_features(pixels, mask)
    assert video.aligned_embeds is None
    torch.testing.assert_close(video.pooler_output, video.global_embeds, rtol=0, atol=0)


def test_frame_embeddings_without_a_caption():
    model = build()
    pixels, mask = video_inputs(batch=2, frames=5, real_frames=[5, 2])
    with torch.no_grad():
        video = model.get_video_features(pixels, mask)
        # Independently: every real frame through CLIP's vision tower and projection, one at a time.
        for row, count in enumerate([5, 2]):
            for frame in range(count):
                alone = model.visual_projection(model.vision_model(pixel_values=pixels[row, frame : frame + 1]).pooler_output)
                torch.testing.assert_close(video.frame_embeds[row, frame], alone[0], rtol=1e-4, atol=1e-5)
    assert video.frame_embeds.shape == (2, 5, model.config.projection_dim)
    assert torch.all(video.frame_embeds[1, 2:] == 0)
    assert video.video_mask.tolist() == mask.bool().tolist()
    assert video.last_hidden_state.shape[0] == 7  # the real frames only


def test_return_dict_false_gives_tuples_in_field_order():
    model = build()
    input_ids, attention_mask = text_inputs()
    pixels, mask = video_inputs(real_frames=[6, 3, 1])
    with torch.no_grad():
        text = model.get_text_features(input_ids, attention_mask)
        text_tuple = model.get_text_features(input_ids, attention_mask, return_dict=False)
        video_tuple = model.get_video_features(pixels, mask, return_dict=False)
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask)
        outputs_tuple = model(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask,
            return_dict=False,
        )
    assert isinstance(text_tuple, tuple) and isinstance(video_tuple, tuple) and isinstance(outputs_tuple, tuple)
    # As CLIPModel: (last_hidden_state, pooler_output, ...).
    torch.testing.assert_close(text_tuple[1], text.pooler_output, rtol=0, atol=0)
    torch.testing.assert_close(outputs_tuple[0], outputs.logits_per_text, rtol=0, atol=0)


def test_hidden_states_and_attentions_of_both_towers_on_request():
    model = build()
    model.set_attn_implementation("eager")
    input_ids, attention_mask = text_inputs()
    pixels, mask = video_inputs(real_frames=[6, 3, 1])
    with torch.no_grad():
        plain = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask)
        outputs = model(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask,
            output_hidden_states=True, output_attentions=True,
        )
    assert plain.text_model_output.hidden_states is None and plain.vision_model_output.attentions is None
    text_layers = model.config.text_config.num_hidden_layers
    vision_layers = model.config.vision_config.num_hidden_layers
    text, video = outputs.text_model_output, outputs.vision_model_output
    assert len(text.hidden_states) == text_layers + 1 and len(text.attentions) == text_layers
    assert len(video.hidden_states) == vision_layers + 1 and len(video.attentions) == vision_layers
    assert text.attentions[0].shape[:2] == (3, model.config.text_config.num_attention_heads)
    assert video.hidden_states[-1].shape[0] == 10  # 6 + 3 + 1 real frames
    # Attention rows are distributions; asking for them does not change the scores.
    torch.testing.assert_close(video.attentions[0].sum(-1), torch.ones_like(video.attentions[0].sum(-1)))
    torch.testing.assert_close(outputs.logits_per_text, plain.logits_per_text, rtol=1e-5, atol=1e-5)

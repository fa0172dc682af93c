"""The temporal modules on cases small enough to compute by hand: the Temporal Difference Block's tokens (each
projection), the temporal pooling around it, and the Temporal Alignment Block's aggregation (against the
independent statement of the authors' computation in `helpers/original_clip2video.py`). A second check of these numbers,
beside the conversion tests, which compare whole scores only."""

import math

import pytest
import torch

from clip2video.modeling_clip2video import CLIP2VideoConfig, CLIP2VideoModel
from clip2video.modeling_clip2video.modeling_clip2video import (
    CLIP2VideoTemporalAlignmentBlock,
    CLIP2VideoTemporalDifferenceBlock,
)
from tests.helpers.models import VARIANTS, text_inputs, tiny_config, video_inputs
from tests.helpers.original_clip2video import _aligned as original_aggregate

WIDTH = 4
# Three frames of width 4; the third is padding in the padded case.
FRAMES = [[1.0, 0.0, 0.0, 0.0], [1.0, 2.0, 0.0, 0.0], [0.0, 2.0, 0.0, 1.0]]
POSITIONS = [[0.1, 0.0, 0.0, 0.0], [0.0, 0.2, 0.0, 0.0], [0.0, 0.0, 0.3, 0.0]]
DIFFERENCE_TYPE = [0.0, 0.0, 0.0, 5.0]  # type_embeddings row 0
FRAME_TYPE = [0.0, 0.0, 7.0, 0.0]  # type_embeddings row 1


def narrow_config(projection: str) -> CLIP2VideoConfig:
    """Width 4, one head: the temporal layers are CLIP text layers of this width."""
    return CLIP2VideoConfig(
        projection_dim=WIDTH,
        text_config=dict(hidden_size=WIDTH, intermediate_size=8, num_attention_heads=1, num_hidden_layers=1),
        vision_config=dict(hidden_size=8, intermediate_size=16, num_attention_heads=1, num_hidden_layers=1),
        difference_projection=projection,
        use_temporal_alignment_block=False,
    )


def make_identity(layers) -> None:
    """Zero the attention and MLP output maps of CLIP encoder layers: each becomes the identity (x + 0 + 0)."""
    with torch.no_grad():
        for layer in layers:
            for linear in (layer.self_attn.out_proj, layer.mlp.fc2):
                linear.weight.zero_()
                linear.bias.zero_()


def difference_block(projection: str) -> CLIP2VideoTemporalDifferenceBlock:
    block = CLIP2VideoTemporalDifferenceBlock(narrow_config(projection)).eval()
    with torch.no_grad():
        block.type_embeddings.weight.copy_(torch.tensor([DIFFERENCE_TYPE, FRAME_TYPE]))
        if projection != "none":
            block.difference_norm.weight.fill_(1.0)
            block.difference_norm.bias.zero_()
        if projection == "mlp":
            # A hand-picked map: swaps the first two coordinates and doubles the last.
            block.difference_projection.weight.copy_(
                torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 2]])
            )
        if projection == "attention":
            make_identity(block.difference_attention.layers)
    return block


def added(*vectors):
    return [sum(values) for values in zip(*vectors)]


def squashed(vector):
    """2 * sigmoid(LayerNorm(v)) - 1 = tanh(LayerNorm(v) / 2), LayerNorm without affine, epsilon 1e-5."""
    mean = sum(vector) / len(vector)
    variance = sum((value - mean) ** 2 for value in vector) / len(vector)
    return [math.tanh((value - mean) / math.sqrt(variance + 1e-5) / 2) for value in vector]


def run_block(block, frame_mask):
    frames = torch.tensor([FRAMES])
    tokens, token_mask = block(frames, torch.tensor([frame_mask]), torch.tensor(POSITIONS))
    return tokens[0].tolist(), token_mask[0].tolist()


# The raw differences f1 - f0 and f2 - f1.
D0, D1 = [0.0, 2.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize(
    "projection, d0, d1",
    [
        ("none", D0, D1),
        # the hand-picked map: (x0, x1, x2, x3) -> (x1, x0, x2, 2 x3), then the squashing
        ("mlp", squashed([2.0, 0.0, 0.0, 0.0]), squashed([0.0, -1.0, 0.0, 2.0])),
        # one attention layer made the identity: the difference plus the position of its later frame, squashed
        ("attention", squashed(added(D0, POSITIONS[1])), squashed(added(D1, POSITIONS[2]))),
    ],
)
def test_difference_tokens_by_hand(projection, d0, d1):
    tokens, token_mask = run_block(difference_block(projection), [True, True, True])
    expected = [
        added(FRAMES[0], POSITIONS[0], FRAME_TYPE),
        added(d0, POSITIONS[0], DIFFERENCE_TYPE),  # d_i takes the position of f_i
        added(FRAMES[1], POSITIONS[1], FRAME_TYPE),
        added(d1, POSITIONS[1], DIFFERENCE_TYPE),
        added(FRAMES[2], POSITIONS[2], FRAME_TYPE),
    ]
    torch.testing.assert_close(torch.tensor(tokens), torch.tensor(expected), rtol=0, atol=1e-6)
    assert token_mask == [True] * 5


def test_difference_token_beside_padding_is_masked():
    # The third frame is padding: the difference between frames 1 and 2 is not a real token.
    _, token_mask = run_block(difference_block("none"), [True, True, False])
    assert token_mask == [True, True, True, False, False]
    _, token_mask = run_block(difference_block("none"), [True, False, False])
    assert token_mask == [True, False, False, False, False]


def test_global_embedding_with_identity_layers_by_hand():
    """With every temporal layer the identity, the temporal transformer's output for frame i is its own token
    `f_i + p_i + type_frame`, and the residual adds `f_i` again: the global embedding is the normalised mean of the
    normalised `2 f_i + p_i + type_frame` over the real frames."""
    torch.manual_seed(0)
    model = CLIP2VideoModel(tiny_config(**VARIANTS["tdb_attention"])).eval()
    make_identity(model.temporal_transformer.layers)
    pixels, mask = video_inputs(batch=2, frames=5, real_frames=[5, 3])
    with torch.no_grad():
        video = model.get_video_features(pixels, mask)
    frame_type = model.temporal_difference_block.type_embeddings.weight[1]
    for row, count in enumerate([5, 3]):
        frames = video.frame_embeds[row, :count]
        tokens = 2 * frames + model.frame_position_embeddings.weight[:count] + frame_type
        tokens = tokens / tokens.norm(dim=-1, keepdim=True)
        expected = tokens.mean(dim=0) / tokens.mean(dim=0).norm()
        torch.testing.assert_close(video.global_embeds[row], expected, rtol=1e-5, atol=1e-6)


def test_alignment_aggregate_by_hand():
    """Two centres and three tokens of width 2, the last one padding; written out with the formula
    `normalise(mean_k normalise(sum_n a[n, k] (x_n - c'_k)))`, `a[n] = softmax_k(x_n . c_k)`."""
    config = CLIP2VideoConfig(
        projection_dim=2,
        text_config=dict(hidden_size=2, intermediate_size=4, num_attention_heads=1, num_hidden_layers=1),
        vision_config=dict(hidden_size=4, intermediate_size=8, num_attention_heads=1, num_hidden_layers=1),
        alignment_num_centers=2,
        alignment_temporal_encoder="none",
    )
    block = CLIP2VideoTemporalAlignmentBlock(config)
    centres, residual_centres = [[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.0], [0.0, -0.5]]
    tokens = [[2.0, 0.0], [0.0, 1.0], [9.0, 9.0]]
    with torch.no_grad():
        block.assignment_centers.copy_(torch.tensor(centres))
        block.residual_centers.copy_(torch.tensor(residual_centres))
        ours = block(torch.tensor([tokens]), torch.tensor([[True, True, False]]))[0].tolist()

    def softmax(values):
        exps = [math.exp(v) for v in values]
        return [e / sum(exps) for e in exps]

    def normalised(vector):
        norm = math.sqrt(sum(v * v for v in vector))
        return [v / norm for v in vector]

    assignments = [softmax([sum(x * c for x, c in zip(token, centre)) for centre in centres]) for token in tokens[:2]]
    per_centre = [
        normalised([
            sum(a[k] * (token[d] - residual_centres[k][d]) for a, token in zip(assignments, tokens[:2]))
            for d in range(2)
        ])
        for k in range(2)
    ]
    expected = normalised([(per_centre[0][d] + per_centre[1][d]) / 2 for d in range(2)])
    assert ours == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("num_centres", [3, 7])
def test_alignment_embeddings_equal_the_authors_aggregation(num_centres):
    """Captions (word tokens after the start token, end token included) and videos (the frame tokens, padding
    excluded) aggregated as the authors do, with a non-default number of centres."""
    torch.manual_seed(1)
    model = CLIP2VideoModel(tiny_config(**VARIANTS["tab_no_encoder"], alignment_num_centers=num_centres)).eval()
    block = model.temporal_alignment_block
    centres = {"weight_center": block.assignment_centers.detach(), "emb_center": block.residual_centers.detach()}
    flags = {"centerK": num_centres}
    input_ids, attention_mask = text_inputs(lengths=(9, 5, 3))
    pixels, mask = video_inputs(batch=3, frames=6, real_frames=[6, 4, 1])
    with torch.no_grad():
        text = model.get_text_features(input_ids, attention_mask)
        video = model.get_video_features(pixels, mask)
        word_tokens = model.text_projection(text.last_hidden_state)
    word_mask = attention_mask.clone()
    word_mask[:, 0] = 0
    expected_text = original_aggregate(centres, flags, word_tokens, word_mask)
    expected_video = original_aggregate(centres, flags, video.frame_embeds, mask)
    torch.testing.assert_close(text.aligned_embeds, expected_text, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(video.aligned_embeds, expected_video, rtol=1e-5, atol=1e-6)

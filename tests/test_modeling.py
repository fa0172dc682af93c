"""CLIP2VideoModel: configuration checks, padding and batch invariance, attention backends, retrieval embeddings,
initialisation from CLIP, gradients, half precision and the fresh-process AutoModel round trip."""

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPModel

from clip2video.modeling_clip2video import CLIP2VideoConfig, CLIP2VideoModel
from tests.helpers.models import VARIANTS, text_inputs, tiny_clip_config, tiny_config, video_inputs
from tests.helpers.processes import run_isolated


def build(variant="tab_tdb", seed=0, **overrides):
    torch.manual_seed(seed)
    return CLIP2VideoModel(tiny_config(**VARIANTS[variant], **overrides)).eval()


# ---------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------


def test_default_config_is_the_papers_full_model():
    config = CLIP2VideoConfig()
    assert (config.temporal_pooling, config.temporal_num_layers) == ("transformer", 4)
    assert config.use_temporal_difference_block and config.difference_projection == "attention"
    assert config.use_temporal_alignment_block and config.alignment_num_centers == 5
    assert config.global_similarity_weight == 0.5
    assert config.alignment_temporal_encoder == "difference_transformer"
    assert (config.max_frame_positions, config.num_frames, config.temporal_layer_norm_eps) == (77, 12, 1e-12)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(temporal_pooling="mean"), "temporal_pooling='transformer'"),
        (dict(use_temporal_difference_block=False), "use_temporal_difference_block=True"),
        (
            dict(use_temporal_difference_block=False, difference_projection="mlp"),
            "difference_projection='none'",
        ),
        (
            dict(temporal_pooling="mean", use_temporal_difference_block=False, difference_projection="none",
                 alignment_temporal_encoder="transformer"),
            "alignment_temporal_encoder='none'",
        ),
        (dict(global_similarity_weight=1.5), "global_similarity_weight"),
        (dict(alignment_num_centers=0), "alignment_num_centers"),
        (dict(num_frames=100), "max_frame_positions"),
        (dict(projection_dim=256), "must equal projection_dim"),
    ],
)
def test_impossible_combinations_raise_value_error(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CLIP2VideoConfig(**overrides)


def test_config_round_trips_through_json(tmp_path):
    config = tiny_config(**VARIANTS["tdb_mlp"], alignment_num_centers=7)
    config.save_pretrained(tmp_path)
    loaded = CLIP2VideoConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()


# ---------------------------------------------------------------------------------------------------------------
# Padding, batches, backends, retrieval embeddings
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_video_embedding_ignores_padding_and_batch_composition(variant):
    model = build(variant)
    pixels, mask = video_inputs(batch=3, frames=7, real_frames=[7, 4, 1])
    with torch.no_grad():
        batched = model.get_video_features(pixels, mask).pooler_output
        for row, count in enumerate([7, 4, 1]):
            alone = model.get_video_features(pixels[row : row + 1, :count], mask[row : row + 1, :count]).pooler_output
            torch.testing.assert_close(batched[row : row + 1], alone, rtol=1e-5, atol=1e-6)
        # Same video, more padding, different neighbours.
        longer = torch.cat([pixels[1:2], torch.zeros(1, 5, *pixels.shape[2:])], dim=1)
        longer_mask = torch.cat([mask[1:2], torch.zeros(1, 5, dtype=torch.long)], dim=1)
        other = torch.randn(1, 12, *pixels.shape[2:])
        regrouped = model.get_video_features(torch.cat([other, longer]), torch.cat([torch.ones(1, 12, dtype=torch.long), longer_mask])).pooler_output
    torch.testing.assert_close(regrouped[1], batched[1], rtol=1e-5, atol=1e-6)


def test_padded_frames_skip_the_vision_tower():
    model = build("tab_tdb")
    pixels, mask = video_inputs(batch=2, frames=6, real_frames=[6, 2])
    frames_seen = []
    hook = model.vision_model.register_forward_pre_hook(
        lambda module, args, kwargs: frames_seen.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    try:
        with torch.no_grad():
            model.get_video_features(pixels, mask)
    finally:
        hook.remove()
    assert frames_seen == [8]


def test_bad_video_inputs_raise_clear_errors():
    model = build("tab_tdb")
    pixels, mask = video_inputs(batch=2, frames=4)
    with pytest.raises(ValueError, match="batch, frames, channels, height, width"):
        model.get_video_features(pixels[0], mask[0])
    with pytest.raises(ValueError, match="floating point"):
        model.get_video_features(pixels.to(torch.uint8), mask)
    with pytest.raises(ValueError, match=r"video_mask must have shape \(batch, frames\) = \(2, 4\)"):
        model.get_video_features(pixels, mask[:, :3])
    with pytest.raises(ValueError, match=r"Videos \[1\] .* no real frame"):
        model.get_video_features(pixels, torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"rows \[0\] have padding before a real frame"):
        model.get_video_features(pixels, torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1]]))
    with pytest.raises(ValueError, match="exceed the model's frame-position table"):
        model.get_video_features(torch.zeros(1, 78, 3, 32, 32), None)
    input_ids, attention_mask = text_inputs()
    with pytest.raises(ValueError, match="must have the shape of input_ids"):
        model.get_text_features(input_ids, attention_mask[:, :-1])
    with pytest.raises(ValueError, match="caption i with video i"):
        model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask, return_loss=True)


@pytest.mark.parametrize("variant", ["tab_tdb", "tab", "tdb_attention"])
def test_sdpa_and_eager_agree(variant):
    input_ids, attention_mask = text_inputs()
    pixels, mask = video_inputs(real_frames=[6, 3, 1])
    model = build(variant)
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        sdpa = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask)
    model.set_attn_implementation("eager")
    temporal_configs = {m.config._attn_implementation for m in model.modules() if hasattr(m, "layers") and hasattr(m, "config")}
    assert temporal_configs == {"eager"}
    with torch.no_grad():
        eager = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask)
    torch.testing.assert_close(sdpa.logits_per_text, eager.logits_per_text, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sdpa.video_embeds, eager.video_embeds, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_text_and_video_features_reproduce_the_logits(variant):
    model = build(variant)
    input_ids, attention_mask = text_inputs()
    pixels, mask = video_inputs(batch=4, real_frames=[6, 5, 2, 1])
    with torch.no_grad():
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask)
        text = model.get_text_features(input_ids, attention_mask).pooler_output
        video = model.get_video_features(pixels, mask).pooler_output
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(video.norm(dim=-1), torch.ones(4))
    expected_width = 2 * model.config.projection_dim if model.config.use_temporal_alignment_block else model.config.projection_dim
    assert text.shape == (3, expected_width) and video.shape == (4, expected_width)
    torch.testing.assert_close(model.logit_scale.exp() * text @ video.T, outputs.logits_per_text, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs.logits_per_video, outputs.logits_per_text.T)
    assert outputs.frame_embeds.shape == (4, 6, model.config.projection_dim)
    assert torch.all(outputs.frame_embeds[3, 1:] == 0)
    if model.config.use_temporal_alignment_block:
        w = model.config.global_similarity_weight
        torch.testing.assert_close(
            outputs.logits_per_text, w * outputs.global_logits_per_text + (1 - w) * outputs.aligned_logits_per_text
        )
    else:
        assert outputs.aligned_logits_per_text is None


def test_text_padding_does_not_change_text_embeddings():
    model = build("tab_tdb")
    input_ids, attention_mask = text_inputs(lengths=(8, 5))
    with torch.no_grad():
        padded = model.get_text_features(input_ids, attention_mask).pooler_output
        short = model.get_text_features(input_ids[1:, :5], attention_mask[1:, :5]).pooler_output
    torch.testing.assert_close(padded[1:], short, rtol=1e-5, atol=1e-6)


def test_loss_is_the_weighted_symmetric_infonce():
    model = build("tab_tdb")
    input_ids, attention_mask = text_inputs(lengths=(10, 6, 3))
    pixels, mask = video_inputs(batch=3, real_frames=[6, 4, 2])
    outputs = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask, return_loss=True)

    def infonce(logits):  # written out: mean over pairs of -log softmax of the diagonal, both directions
        rows = -torch.diagonal(torch.log_softmax(logits, dim=1)).mean()
        cols = -torch.diagonal(torch.log_softmax(logits, dim=0)).mean()
        return (rows + cols) / 2

    expected = 0.5 * infonce(outputs.global_logits_per_text) + 0.5 * infonce(outputs.aligned_logits_per_text)
    torch.testing.assert_close(outputs.loss, expected)


# ---------------------------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["tab_tdb", "tdb_mlp", "tab"])
def test_gradients_reach_every_new_parameter(variant):
    model = build(variant).train()
    input_ids, attention_mask = text_inputs(lengths=(10, 6, 4))
    pixels, mask = video_inputs(batch=3, real_frames=[6, 6, 4])
    model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask, return_loss=True).loss.backward()
    clip_names = {name for name, _ in CLIPModel(tiny_clip_config()).named_parameters()}
    new = {name: p for name, p in model.named_parameters() if name not in clip_names}
    assert new, "the variant has temporal parameters"
    no_grad = [name for name, p in new.items() if p.grad is None or p.grad.abs().sum() == 0]
    assert not no_grad
    assert model.logit_scale.grad is not None and model.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradients():
    input_ids, attention_mask = text_inputs(lengths=(10, 6, 4))
    pixels, mask = video_inputs(batch=3, real_frames=[6, 6, 4])
    grads = []
    for checkpointing in (False, True):
        model = build("tab_tdb").train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            assert model.temporal_transformer.layers[0].gradient_checkpointing
        model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask, return_loss=True).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)


# ---------------------------------------------------------------------------------------------------------------
# Initialisation from CLIP and loading
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip_folder(tmp_path_factory):
    torch.manual_seed(3)
    clip = CLIPModel(tiny_clip_config())
    folder = tmp_path_factory.mktemp("tiny-clip")
    clip.save_pretrained(folder)
    return folder, clip


@pytest.mark.parametrize("variant", ["tab_tdb", "tdb_mlp", "tab", "mean_pooling"])
def test_from_clip_copies_what_the_authors_copy_and_nothing_else(tiny_clip_folder, variant):
    folder, clip = tiny_clip_folder
    model = CLIP2VideoModel.from_pretrained(folder, temporal_num_layers=2, **VARIANTS[variant])
    assert model.config.model_type == "clip2video" and model.config.temporal_num_layers == 2
    clip_state = clip.state_dict()
    state = model.state_dict()
    for name, value in clip_state.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0, msg=name)

    text_layers = clip.text_model.encoder.layers
    text_positions = clip.text_model.embeddings.position_embedding.weight

    def same_layer(layer, source):
        for (name, value), (_, expected) in zip(layer.state_dict().items(), source.state_dict().items()):
            torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=name)

    copied = set()
    if model.config.temporal_pooling == "transformer":
        torch.testing.assert_close(model.frame_position_embeddings.weight, text_positions, rtol=0, atol=0)
        for i, layer in enumerate(model.temporal_transformer.layers):
            same_layer(layer, text_layers[i])
        copied |= {n for n in state if n.startswith(("frame_position_embeddings", "temporal_transformer"))}
    if model.config.use_temporal_difference_block:
        block = model.temporal_difference_block
        torch.testing.assert_close(block.type_embeddings.weight, text_positions[:2], rtol=0, atol=0)
        copied.add("temporal_difference_block.type_embeddings.weight")
        if model.config.difference_projection == "mlp":
            torch.testing.assert_close(block.difference_projection.weight, clip.visual_projection.weight[:, :128], rtol=0, atol=0)
            copied.add("temporal_difference_block.difference_projection.weight")
        if model.config.difference_projection == "attention":
            same_layer(block.difference_attention.layers[0], text_layers[0])
            copied |= {n for n in state if n.startswith("temporal_difference_block.difference_attention")}
        if model.config.difference_projection != "none":  # a fresh LayerNorm, as in the authors' code
            assert torch.all(block.difference_norm.weight == 1) and torch.all(block.difference_norm.bias == 0)
            copied |= {"temporal_difference_block.difference_norm.weight", "temporal_difference_block.difference_norm.bias"}
    if model.config.use_temporal_alignment_block:
        tab = model.temporal_alignment_block
        for centres in (tab.assignment_centers, tab.residual_centers):
            assert abs(centres.std().item() - 64**-0.5) < 0.04 and abs(centres.mean().item()) < 0.04
        copied |= {"temporal_alignment_block.assignment_centers", "temporal_alignment_block.residual_centers"}
        if model.config.alignment_temporal_encoder != "none":
            same_layer(tab.frame_encoder.layers[0], text_layers[0])
            copied |= {n for n in state if n.startswith("temporal_alignment_block.frame_encoder")}
    assert set(state) - set(clip_state) == copied


def test_loading_a_saved_clip2video_checkpoint_never_reinitialises(tmp_path):
    model = build("tab_tdb")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path)
    loaded, info = CLIP2VideoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for (name, value), (_, expected) in zip(loaded.state_dict().items(), model.state_dict().items()):
        torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_loads_and_runs_with_fp32_heads(tmp_path, dtype):
    model = build("tab_tdb")
    model.save_pretrained(tmp_path)
    half = CLIP2VideoModel.from_pretrained(tmp_path, dtype=dtype).eval()
    assert half.vision_model.encoder.layers[0].mlp.fc1.weight.dtype == dtype
    assert half.vision_model.embeddings.patch_embedding.weight.dtype == torch.float32
    assert half.visual_projection.weight.dtype == dtype and half.dtype == dtype
    for name, parameter in half.named_parameters():
        if name.startswith(("temporal_", "frame_position", "text_", "vision_model.embeddings", "logit_scale")) or "norm" in name:
            assert parameter.dtype == torch.float32, name
    input_ids, attention_mask = text_inputs()
    pixels, mask = video_inputs(real_frames=[6, 3, 1])
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask).logits_per_text
        reduced = half(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels.to(dtype), video_mask=mask).logits_per_text
    assert reduced.dtype == torch.float32
    torch.testing.assert_close(reduced, full, rtol=2e-2, atol=2e-2 * full.abs().max().item())


@pytest.mark.slow
def test_fresh_process_automodel_round_trip(tmp_path):
    model = build("tab_tdb")
    input_ids, attention_mask = text_inputs()
    pixels, mask = video_inputs(real_frames=[6, 3, 1])
    with torch.no_grad():
        expected = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask)
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    saved = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_clip2video.py", "configuration_clip2video.py"} <= saved
    torch.save(dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask), tmp_path / "inputs.pt")
    # The same interpreter also checks the feature outputs (`get_text_features` / `get_video_features`) of a model
    # with a non-default mix and centre count (w = 0.8: swapping w and 1 - w would show), saved in its own folder.
    torch.manual_seed(0)
    features = CLIP2VideoModel(tiny_config(global_similarity_weight=0.8, alignment_num_centers=5)).eval()
    features.save_pretrained(tmp_path / "features")
    with torch.no_grad():
        frames = F.normalize(features.get_video_features(pixels, mask).frame_embeds, dim=-1)
        logits = features(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels,
                          video_mask=mask).logits_per_text
    torch.save(dict(frames=frames, logits=logits), tmp_path / "expected_features.pt")
    run_isolated(
        """
        import json, torch, torch.nn.functional as F
        from transformers import AutoConfig, AutoModel
        config = json.load(open("checkpoint/config.json"))
        assert config["auto_map"] == {"AutoConfig": "configuration_clip2video.CLIP2VideoConfig",
                                      "AutoModel": "modeling_clip2video.CLIP2VideoModel"}, config["auto_map"]
        assert AutoConfig.from_pretrained("checkpoint", trust_remote_code=True).model_type == "clip2video"
        model = AutoModel.from_pretrained("checkpoint", trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            out = model(**torch.load("inputs.pt"))
        torch.save({"logits": out.logits_per_text, "video": out.video_embeds}, "outputs.pt")

        model = AutoModel.from_pretrained("features", trust_remote_code=True).eval()
        i, e = torch.load("inputs.pt"), torch.load("expected_features.pt")
        with torch.no_grad():
            t = model.get_text_features(input_ids=i["input_ids"], attention_mask=i["attention_mask"])
            v = model.get_video_features(pixel_values_videos=i["pixel_values_videos"], video_mask=i["video_mask"])
        torch.testing.assert_close(model.logit_scale.exp() * t.pooler_output @ v.pooler_output.T, e["logits"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(F.normalize(v.frame_embeds, dim=-1), e["frames"], rtol=1e-5, atol=1e-6)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        print("ok")
        """,
        cwd=tmp_path,
    )
    outputs = torch.load(tmp_path / "outputs.pt")
    torch.testing.assert_close(outputs["logits"], expected.logits_per_text, rtol=0, atol=0)
    torch.testing.assert_close(outputs["video"], expected.video_embeds, rtol=0, atol=0)


def test_autocast_keeps_the_heads_in_float32():
    model = build("tab_tdb")
    input_ids, attention_mask = text_inputs()
    pixels, mask = video_inputs(real_frames=[6, 3, 1])
    with torch.no_grad():
        full = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixels, video_mask=mask)
            video = model.get_video_features(pixels, mask).pooler_output
    assert mixed.logits_per_text.dtype == torch.float32 and video.dtype == torch.float32
    assert not torch.equal(mixed.logits_per_text, full.logits_per_text)  # the towers did run in bf16
    torch.testing.assert_close(mixed.logits_per_text, full.logits_per_text, rtol=1e-2, atol=1e-2 * full.logits_per_text.abs().max().item())

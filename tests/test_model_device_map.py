"""CLIP2VideoModel under accelerate's big-model machinery and in half precision: device maps that offload the
temporal modules to disk or CPU give the scores of the plain model, `model.dtype` is the towers' dtype, the
`padding_mask_videos` alias, and the warning for a CLIP2Video checkpoint with missing temporal tensors."""

import logging

import pytest
import torch
from accelerate import cpu_offload, infer_auto_device_map
from safetensors.torch import load_file, save_file

from clip2video.modeling_clip2video import CLIP2VideoModel
from tests.helpers.models import text_inputs, tiny_config, video_inputs
from tests.helpers.processes import run_isolated


TEMPORAL_MODULES = (
    "frame_position_embeddings", "temporal_transformer", "temporal_difference_block", "temporal_alignment_block"
)
MODEL_LOGGER = "clip2video.modeling_clip2video.modeling_clip2video"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved full model (TDB + TAB) with every parameter moved off its initial value."""
    torch.manual_seed(0)
    model = CLIP2VideoModel(tiny_config()).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    folder = tmp_path_factory.mktemp("checkpoint")
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def inputs():
    input_ids, attention_mask = text_inputs()
    pixel_values_videos, video_mask = video_inputs(real_frames=[6, 4, 1])
    return dict(
        input_ids=input_ids, attention_mask=attention_mask, pixel_values_videos=pixel_values_videos, video_mask=video_mask
    )


@pytest.fixture(scope="module")
def reference(checkpoint, inputs):
    with torch.no_grad():
        return CLIP2VideoModel.from_pretrained(checkpoint).eval()(**inputs)


def assert_same_scores(model, inputs, reference):
    with torch.no_grad():
        output = model(**inputs)
        video = model.get_video_features(inputs["pixel_values_videos"], inputs["video_mask"])
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
    torch.testing.assert_close(output.logits_per_text, reference.logits_per_text, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(video.pooler_output, reference.video_embeds, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(video.frame_embeds, reference.frame_embeds, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(text.pooler_output, reference.text_embeds, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("target", ["disk", "cpu"])
def test_device_map_offloading_the_temporal_modules_gives_the_same_scores(checkpoint, inputs, reference, tmp_path, target):
    towers = ("text_model", "vision_model", "visual_projection", "text_projection", "logit_scale")
    device_map = {**{name: "cpu" for name in towers}, **{name: target for name in TEMPORAL_MODULES}}
    model = CLIP2VideoModel.from_pretrained(checkpoint, device_map=device_map, offload_folder=tmp_path).eval()
    if target == "disk":
        # Really offloaded: the weights wait on the meta device until their module's forward loads them.
        assert model.temporal_alignment_block.assignment_centers.device.type == "meta"
        assert model.frame_position_embeddings.weight.device.type == "meta"
    assert_same_scores(model, inputs, reference)


def test_automatic_device_map_keeps_temporal_blocks_whole(checkpoint, inputs, reference, tmp_path):
    model = CLIP2VideoModel.from_pretrained(checkpoint).eval()
    assert {"CLIP2VideoTemporalDifferenceBlock", "CLIP2VideoTemporalAlignmentBlock", "CLIPEncoderLayer"} <= set(
        model._no_split_modules
    )
    # A memory budget that leaves the temporal modules on disk.
    device_map = infer_auto_device_map(
        model, max_memory={"cpu": 2_500_000, "disk": 10**10}, no_split_module_classes=model._no_split_modules
    )
    for block in ("temporal_difference_block", "temporal_alignment_block"):
        assert device_map.get(block) == "disk", device_map
        assert not any(key.startswith(block + ".") for key in device_map), device_map
    offloaded = CLIP2VideoModel.from_pretrained(checkpoint, device_map=device_map, offload_folder=tmp_path).eval()
    assert_same_scores(offloaded, inputs, reference)


def test_whole_model_cpu_offload_reads_every_parameter_inside_its_modules_forward(checkpoint, inputs, reference):
    # accelerate's cpu_offload puts every parameter, `logit_scale` included, on the meta device and loads each one
    # only while its module's forward runs: a parameter read anywhere else would fail on the meta device.
    model = CLIP2VideoModel.from_pretrained(checkpoint).eval()
    cpu_offload(model, execution_device=torch.device("cpu"))
    assert all(parameter.device.type == "meta" for parameter in model.parameters())
    assert_same_scores(model, inputs, reference)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_model_dtype_is_the_towers_dtype(checkpoint, dtype):
    model = CLIP2VideoModel.from_pretrained(checkpoint, dtype=dtype)
    assert model.dtype == dtype
    assert model.vision_model.encoder.layers[0].self_attn.q_proj.weight.dtype == dtype
    assert model.logit_scale.dtype == torch.float32  # kept in float32, and first in parameters()


def test_padding_mask_videos_is_video_mask(checkpoint, inputs, reference):
    model = CLIP2VideoModel.from_pretrained(checkpoint).eval()
    renamed = dict(inputs, padding_mask_videos=inputs["video_mask"].bool())
    del renamed["video_mask"]
    with torch.no_grad():
        output = model(**renamed)
        video = model.get_video_features(inputs["pixel_values_videos"], padding_mask_videos=inputs["video_mask"])
    torch.testing.assert_close(output.logits_per_text, reference.logits_per_text, rtol=0, atol=0)
    torch.testing.assert_close(video.pooler_output, reference.video_embeds, rtol=0, atol=0)
    with pytest.raises(ValueError, match="name the same mask but differ"):
        model.get_video_features(
            inputs["pixel_values_videos"], inputs["video_mask"], padding_mask_videos=torch.ones_like(inputs["video_mask"])
        )


def test_missing_temporal_tensors_of_a_clip2video_checkpoint_are_named(checkpoint, tmp_path, caplog):
    state = load_file(checkpoint / "model.safetensors")
    removed = [
        "frame_position_embeddings.weight",
        "temporal_alignment_block.assignment_centers",
        "temporal_alignment_block.residual_centers",
        *[key for key in state if key.startswith("temporal_transformer.layers.1.")],
    ]
    for key in removed:
        del state[key]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((checkpoint / "config.json").read_text())
    with caplog.at_level(logging.WARNING, logger=MODEL_LOGGER):
        CLIP2VideoModel.from_pretrained(tmp_path)
    (message,) = [record.getMessage() for record in caplog.records if record.name == MODEL_LOGGER]
    assert f"lacks {len(removed)} temporal tensor(s)" in message
    for key in removed:
        assert key in message
    assert "temporal_alignment_block.assignment_centers (random)" in message
    assert "frame_position_embeddings.weight (from CLIP)" in message
    # A complete checkpoint loads without it.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=MODEL_LOGGER):
        CLIP2VideoModel.from_pretrained(checkpoint)
    assert not [record for record in caplog.records if record.name == MODEL_LOGGER]


def test_a_clip_checkpoint_starts_the_temporal_modules_without_that_warning(tiny_clip_checkpoint, caplog):
    with caplog.at_level(logging.WARNING, logger=MODEL_LOGGER):
        model = CLIP2VideoModel.from_pretrained(tiny_clip_checkpoint, temporal_num_layers=2)
    assert not [record for record in caplog.records if record.name == MODEL_LOGGER]
    text_positions = model.text_model.embeddings.position_embedding.weight
    torch.testing.assert_close(model.frame_position_embeddings.weight, text_positions, rtol=0, atol=0)


@pytest.mark.slow
def test_fresh_process_remote_code_offload_dtype_alias_and_missing_tensor_warning(checkpoint, inputs, reference, tmp_path):
    torch.save(inputs, tmp_path / "inputs.pt")
    torch.save(reference.logits_per_text, tmp_path / "expected.pt")
    state = load_file(checkpoint / "model.safetensors")
    del state["temporal_alignment_block.residual_centers"]
    (tmp_path / "damaged").mkdir()
    save_file(state, tmp_path / "damaged" / "model.safetensors", metadata={"format": "pt"})
    for name in ("config.json", "configuration_clip2video.py", "modeling_clip2video.py"):
        (tmp_path / "damaged" / name).write_bytes((checkpoint / name).read_bytes())
    run_isolated(
        f"""
        import logging, torch
        from transformers import AutoModel
        checkpoint = {str(checkpoint)!r}
        i = torch.load("inputs.pt")
        expected = torch.load("expected.pt")
        device_map = {{name: "cpu" for name in ("text_model", "vision_model", "visual_projection", "text_projection",
                                                "logit_scale", "frame_position_embeddings", "temporal_transformer")}}
        device_map.update(temporal_difference_block="disk", temporal_alignment_block="disk")
        model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True, device_map=device_map,
                                          offload_folder="offload").eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert model.temporal_alignment_block.assignment_centers.device.type == "meta"
        with torch.no_grad():
            logits = model(input_ids=i["input_ids"], attention_mask=i["attention_mask"],
                           pixel_values_videos=i["pixel_values_videos"], padding_mask_videos=i["video_mask"]).logits_per_text
        torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-6)
        assert AutoModel.from_pretrained(checkpoint, trust_remote_code=True, dtype=torch.bfloat16).dtype == torch.bfloat16

        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger().addHandler(handler)
        AutoModel.from_pretrained("damaged", trust_remote_code=True)
        messages = [r.getMessage() for r in records if "lacks" in r.getMessage()]
        assert len(messages) == 1 and "temporal_alignment_block.residual_centers (random)" in messages[0], messages
        print("ok")
        """,
        cwd=tmp_path,
    )


def test_initialising_offloaded_temporal_modules_from_clip_is_an_error(tiny_clip_checkpoint, tmp_path):
    # Copying CLIP weights into parameters that wait on the meta device would silently do nothing.
    towers = ("text_model", "vision_model", "visual_projection", "text_projection", "logit_scale")
    device_map = {**{name: "cpu" for name in towers}, **{name: "disk" for name in TEMPORAL_MODULES}}
    with pytest.raises(ValueError, match="frame_position_embeddings.weight.*offloaded by the device_map"):
        CLIP2VideoModel.from_pretrained(
            tiny_clip_checkpoint, device_map=device_map, offload_folder=tmp_path / "offload", temporal_num_layers=2
        )

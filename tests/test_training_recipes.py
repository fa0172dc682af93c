"""The paper's recipe as run.py's defaults, and how parameters are grouped for the optimizer."""

import pytest

from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.training.recipes import PAPER_RECIPE, parameter_groups, small_synthetic_config
from clip2video.training.run import parse_args


def test_real_data_defaults_are_the_clip4clip_recipe(capsys):
    args = parse_args(["--dataset", "msrvtt", "--annotations_dir", "a", "--videos_dir", "v",
                       "--model_name_or_path", "openai/clip-vit-base-patch32"])
    assert (args.learning_rate, args.clip_learning_rate_scale, args.weight_decay) == (1e-4, 1e-3, 0.2)
    assert (args.warmup_proportion, args.num_train_epochs, args.global_batch_size) == (0.1, 5, 128)
    assert (args.num_frames, args.max_text_length, args.max_grad_norm) == (12, 32, 1.0)
    assert args.distinct_captions_in_batch is False and args.mean_pooling_baseline is False
    assert PAPER_RECIPE["learning_rate"] == 1e-4
    explicit = parse_args(["--dataset", "msvd", "--annotations_dir", "a", "--videos_dir", "v",
                           "--model_name_or_path", "m", "--learning_rate", "3e-5"])
    assert explicit.learning_rate == 3e-5 and explicit.weight_decay == 0.2
    with pytest.raises(SystemExit, match="^2$"):  # argparse's usage error; the message goes to stderr
        parse_args(["--dataset", "msrvtt", "--model_name_or_path", "m"])
    assert "--dataset msrvtt needs --annotations_dir and --videos_dir" in capsys.readouterr().err


def test_training_frames_jitter_when_decoded_from_files_only(capsys):
    real = ["--dataset", "msrvtt", "--annotations_dir", "a", "--videos_dir", "v", "--model_name_or_path", "m"]
    assert parse_args(real).random_frame_jitter is True
    assert parse_args([*real, "--cache_frames"]).random_frame_jitter is False
    assert parse_args([]).random_frame_jitter is False  # synthetic data: frames cached
    with pytest.raises(SystemExit, match="^2$"):
        parse_args([*real, "--cache_frames", "--random_frame_jitter"])
    assert "use --no-cache_frames or --no-random_frame_jitter" in capsys.readouterr().err


def test_parameter_groups():
    model = CLIP2VideoModel(small_synthetic_config(8, "clip2video"))
    groups = parameter_groups(model, learning_rate=1e-4, clip_learning_rate_scale=1e-3, weight_decay=0.2)
    placed = {id(p): group for group in groups for p in group["params"]}
    assert len(placed) == sum(1 for _ in model.parameters())  # each parameter exactly once
    parameters = dict(model.named_parameters())

    def group_of(name):
        group = placed[id(parameters[name])]
        return group["lr"], group["weight_decay"]

    assert group_of("logit_scale") == (pytest.approx(1e-7), 0.0)
    assert group_of("text_model.embeddings.token_embedding.weight") == (pytest.approx(1e-7), 0.0)
    assert group_of("text_model.encoder.layers.0.self_attn.q_proj.weight") == (pytest.approx(1e-7), 0.2)
    assert group_of("text_model.encoder.layers.0.self_attn.q_proj.bias") == (pytest.approx(1e-7), 0.0)
    assert group_of("vision_model.embeddings.patch_embedding.weight") == (pytest.approx(1e-7), 0.2)
    assert group_of("visual_projection.weight") == (pytest.approx(1e-7), 0.2)
    assert group_of("frame_position_embeddings.weight") == (1e-4, 0.0)
    assert group_of("temporal_transformer.layers.0.mlp.fc1.weight") == (1e-4, 0.2)
    assert group_of("temporal_transformer.layers.0.layer_norm1.weight") == (1e-4, 0.0)
    assert group_of("temporal_alignment_block.assignment_centers") == (1e-4, 0.2)

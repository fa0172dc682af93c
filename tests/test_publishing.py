"""`pipelines/publishing/`: the one owner of what a published folder carries (`folder.py`, `card.py`, `__main__.py`);
the atomic publish and the Hub push are tested in test_training_publish.py."""

import json
import shutil
from importlib.resources import files

import pytest
import torch

from clip2video.modeling_clip2video import CLIP2VideoModel
from clip2video.pipelines.publishing import (
    ENDPOINT_FILES,
    build_results,
    complete_saved_checkpoint,
    custom_pipelines_config,
    save_publishable_checkpoint,
)
from clip2video.pipelines.publishing.__main__ import main as publishing_main
from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer
from clip2video.training.recipes import build_processor, small_synthetic_config
from tests.helpers.original_clip2video import random_original_checkpoint
from tests.helpers.processes import run_forked_until_killed


def contents(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def assert_same_folder(folder, expected, loaded=False):
    """The same files with the same bytes; `config.json` (written by two savers) the same JSON, but for the `dtype`
    that `from_pretrained` records in the sub-configurations of a `loaded` model."""
    found, wanted = contents(folder), contents(expected)
    assert sorted(found) == sorted(wanted)
    found_config, wanted_config = json.loads(found.pop("config.json")), json.loads(wanted.pop("config.json"))
    if loaded:
        for name in ("text_config", "vision_config"):
            assert wanted_config[name].pop("dtype") == "float32" and "dtype" not in found_config[name]
    assert found_config == wanted_config
    assert found == wanted


def test_one_write_equals_completing_a_saved_model_and_leaves_the_model_as_it_was(tmp_path):
    config = small_synthetic_config(4, "clip2video")
    torch.manual_seed(0)
    model = CLIP2VideoModel(config)
    processor = build_processor(None, 4, config)

    save_publishable_checkpoint(tmp_path / "once", model, processor)
    assert "custom_pipelines" not in model.config.to_dict()  # the caller's model does not keep the pipelines entry

    model.save_pretrained(tmp_path / "twice")
    written = complete_saved_checkpoint(tmp_path / "twice", processor)
    assert written == ["pipeline_clip2video.py", *ENDPOINT_FILES, "config.json"]

    assert_same_folder(tmp_path / "twice", tmp_path / "once")
    assert {"model.safetensors", "pipeline_clip2video.py", "modeling_clip2video.py", *ENDPOINT_FILES} <= set(
        contents(tmp_path / "once")
    )
    config_written = json.loads((tmp_path / "once" / "config.json").read_text())
    assert config_written["custom_pipelines"] == custom_pipelines_config()
    assert set(config_written["custom_pipelines"]) == {
        "text-to-video-retrieval", "zero-shot-video-classification", "video-classification"
    }
    # The copied files are this package's data, byte for byte.
    for name in ENDPOINT_FILES:
        packaged = files("clip2video.pipelines.publishing") / "endpoint" / name
        assert (tmp_path / "once" / name).read_bytes() == packaged.read_bytes()
    assert not list((tmp_path / "twice").glob("*.partial"))


def test_completing_refuses_an_incomplete_folder_before_writing(tmp_path):
    config = small_synthetic_config(4, "clip2video")
    folder = tmp_path / "model"
    with pytest.raises(FileNotFoundError, match=r"config\.json does not exist: save the model into"):
        complete_saved_checkpoint(folder)
    CLIP2VideoModel(config).save_pretrained(folder)
    before = contents(folder)
    with pytest.raises(FileNotFoundError, match=r"has no processor_config\.json: give the processor"):
        complete_saved_checkpoint(folder)
    with pytest.raises(FileNotFoundError, match=r"No such file or directory: .*missing\.md"):
        complete_saved_checkpoint(folder, build_processor(None, 4, config), model_card_file=tmp_path / "missing.md")
    assert contents(folder) == before  # nothing was written


def _complete_in_a_child(folder, processor, card, kill_after: int | None) -> int:
    """`complete_saved_checkpoint` in a forked process killed right after its `kill_after`-th file write or rename;
    returns how many it made (when not killed) or -1."""
    return run_forked_until_killed(
        lambda: complete_saved_checkpoint(folder, processor, model_card_file=card), kill_after,
        folder.parent / "operations", operations=("replace",),
    )


@pytest.mark.slow
def test_a_kill_at_every_step_of_completing_leaves_a_loadable_folder_that_completes(tmp_path):
    """Killed after any write or rename of its own (the processor, saved by transformers, is already in the folder),
    the folder's `config.json` is whole and advertises pipelines only with their code; completing it again gives
    exactly the folder of an uninterrupted run (no partial file left)."""
    config = small_synthetic_config(4, "clip2video")
    torch.manual_seed(0)
    model, processor = CLIP2VideoModel(config), build_processor(None, 4, config)
    card = tmp_path / "card.md"
    card.write_text("# card\n", encoding="utf-8")
    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    reference = tmp_path / "reference" / "folder"
    shutil.copytree(tmp_path / "saved", reference)
    steps = _complete_in_a_child(reference, None, card, kill_after=None)
    assert steps == 2 * (len(ENDPOINT_FILES) + 3)  # the copied files, the card and config.json: a write, a rename

    pipeline_code = (files("clip2video.pipelines") / "pipeline_clip2video.py").read_bytes()
    for kill_after in range(1, steps + 1):
        folder = tmp_path / f"kill{kill_after}" / "folder"
        shutil.copytree(tmp_path / "saved", folder)
        assert _complete_in_a_child(folder, None, card, kill_after) == -1
        written = json.loads((folder / "config.json").read_text())  # never half written
        if "custom_pipelines" in written:
            assert (folder / "pipeline_clip2video.py").read_bytes() == pipeline_code, kill_after
        for name in ENDPOINT_FILES:  # each copied file is whole or absent
            packaged = (files("clip2video.pipelines.publishing") / "endpoint" / name).read_bytes()
            assert not (folder / name).exists() or (folder / name).read_bytes() == packaged, (kill_after, name)
        complete_saved_checkpoint(folder, model_card_file=card)
        assert contents(folder) == contents(reference), kill_after


def test_a_state_dict_replaces_the_models_tensors(tmp_path):
    from safetensors.torch import load_file

    config = small_synthetic_config(4, "clip2video")
    model = CLIP2VideoModel(config)
    state = {name: torch.full_like(tensor, 0.5) for name, tensor in model.state_dict().items()}
    save_publishable_checkpoint(tmp_path / "folder", model, build_processor(None, 4, config), state_dict=state)
    saved = load_file(tmp_path / "folder" / "model.safetensors")
    assert all(torch.all(tensor == 0.5) for tensor in saved.values())
    assert not torch.all(model.text_projection.weight == 0.5)


def test_the_authors_release_is_published_in_one_call(tmp_path, capsys):
    """`python -m clip2video.pipelines.publishing convert`: the converted model, its processor at the flags' sampling,
    the pipelines, the endpoint files and the card, the folder `save_publishable_checkpoint` writes for them."""
    checkpoint = tmp_path / "pytorch_model.bin.2"
    torch.save(random_original_checkpoint(cross_num_hidden_layers=2, centerK=7, seed=3), checkpoint)
    card = tmp_path / "card.md"
    card.write_text("---\nlicense: mit\n---\n# a converted checkpoint\n", encoding="utf-8")
    published = tmp_path / "published"
    publishing_main(["convert", "--checkpoint", str(checkpoint), "--output_dir", str(published),
                     "--cross_num_hidden_layers", "2", "--centerK", "7", "--num_frames", "4", "--fps", "5",
                     "--model_card", str(card)])
    assert f"Published {published}" in capsys.readouterr().out

    model = CLIP2VideoModel.from_pretrained(published)
    assert model.config.alignment_num_centers == 7
    processor = CLIP2VideoProcessor(video_processor=CLIP2VideoVideoProcessor(num_frames=4, fps=5.0),
                                    tokenizer=offline_clip_tokenizer())
    save_publishable_checkpoint(tmp_path / "expected", model, processor)
    (tmp_path / "expected" / "README.md").write_bytes(card.read_bytes())
    assert_same_folder(published, tmp_path / "expected", loaded=True)
    saved_processor = json.loads((published / "processor_config.json").read_text())["video_processor"]
    assert (saved_processor["num_frames"], saved_processor["fps"]) == (4, 5.0)


def test_the_command_fails_before_converting_on_a_bad_card_or_sampling(tmp_path, capsys):
    checkpoint = tmp_path / "pytorch_model.bin.2"
    torch.save(random_original_checkpoint(cross_num_hidden_layers=2, seed=3), checkpoint)
    for extra, message in ((["--model_card", str(tmp_path / "nope.md")], "nope.md is not a file"),
                           (["--fps", "7"], "fps")):
        with pytest.raises(SystemExit, match="2"):
            publishing_main(["convert", "--checkpoint", str(checkpoint), "--output_dir", str(tmp_path / "out"),
                             "--cross_num_hidden_layers", "2", *extra])
        assert message in capsys.readouterr().err
        assert not (tmp_path / "out").exists()


def test_results_name_the_start_model_for_the_card_only_when_it_is_a_hub_id(tmp_path):
    common = dict(runs={"clip2video": {}}, test_split={"dataset": "synthetic"}, args={"seed": 0},
                  run_fingerprint="f", timings={"total_seconds": 1.0})
    bad = {"training": {"a.mp4": "no video stream"}, "evaluation": {}}
    results = build_results("user/clip2video", bad_videos=bad, **common)
    assert list(results) == ["model", "base_model", "runs", "test_split", "bad_videos", "args", "run_fingerprint",
                             "timings"]
    assert results["base_model"] == "user/clip2video"
    assert results["bad_videos"] == {"training": [{"video": "a.mp4", "reason": "no video stream"}], "evaluation": []}
    assert build_results(str(tmp_path), bad_videos=bad, **common)["base_model"] is None  # a local folder
    scratch = build_results(None, bad_videos=bad, **common)
    assert (scratch["model"], scratch["base_model"]) == ("small CLIP2Video from scratch", None)

"""Honest publishing against a fake Hub on 127.0.0.1 (tests/fake_hub.py): the repository is created and write
access checked before any work, results.json is pushed with the model, the card's metadata parses; and one run per
output folder."""

import json
import shutil
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
from huggingface_hub import ModelCard

from clip2video.pipelines.publishing import HUB_GITIGNORE, model_card, prepare_hub_repo, push_folder
from tests.helpers.fake_hub import FakeHub
from tests.helpers.processes import environment, run_forked_until_killed, run_training

TINY = ["--num_synthetic_train_clips", "64", "--num_train_epochs", "1", "--global_batch_size", "16",
        "--num_frames", "4", "--eval_batch_size", "60", "--checkpointing_steps", "2", "--no-mean_pooling_baseline",
        "--report_to", "none", "--data_dir", "data"]
TOKEN = "hf_fake_write_token"


def online(workdir: Path, endpoint: str) -> dict[str, str]:
    """The training runs' environment: the Hub at `endpoint`, no token but the one given on the command line, one
    thread, a private Hugging Face cache."""
    return environment(HF_HUB_OFFLINE=None, HF_TOKEN=None, OMP_NUM_THREADS="1", HF_HOME=str(workdir / "hf_home"),
                       HF_HUB_DISABLE_TELEMETRY="1", HF_ENDPOINT=endpoint)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("training_publish")
    with FakeHub(tokens={TOKEN: "tester"}) as hub:
        run_training(*TINY, "--output_dir", "published", "--push_to_hub", "--hub_model_id", "tester/clip2video-tiny",
                     "--hub_token", TOKEN, "--hub_private", cwd=workdir, env=online(workdir, hub.endpoint))
    return workdir, hub


@pytest.mark.slow
def test_push_carries_results_and_a_valid_card(pushed):
    workdir, hub = pushed
    # The repository was created (private) and write access checked before anything else was asked of the Hub.
    assert hub.requests[:3] == ["GET /api/whoami-v2", "POST /api/repos/create",
                                "GET /api/models/tester/clip2video-tiny/auth-check/write"]
    assert hub.private["tester/clip2video-tiny"] is True
    (commit,) = hub.commits
    files = commit["files"]
    local = workdir / "published"
    assert json.loads(files["results.json"]) == json.loads((local / "results.json").read_text())
    assert files["model.safetensors"] == (local / "model.safetensors").read_bytes()
    assert not any(name.startswith(("checkpoints/", "logs/")) or name == "run.json" for name in files)
    results = json.loads(files["results.json"])
    assert "R@1" in commit["summary"] and f"{results['runs']['clip2video']['metrics']['t2v_R1']:.1f}" in commit["summary"]
    assert results["args"]["hub_token"] == "<redacted>" and TOKEN not in files["results.json"].decode()

    card = ModelCard(files["README.md"].decode())
    assert hub.validated == [files["README.md"].decode()]  # upload_folder had the Hub validate the metadata
    data = card.data
    assert data.pipeline_tag == "video-classification" and data.library_name == "transformers"
    assert data.license == "mit" and data.language == ["en"] and data.widget[0]["candidate_labels"]
    t2v_r1 = next(result for result in data.eval_results
                  if result.task_type == "text-to-video-retrieval" and result.metric_type == "recall@1")
    assert t2v_r1.metric_value == round(results["runs"]["clip2video"]["metrics"]["t2v_R1"], 2)
    assert data.base_model is None  # trained from scratch


@pytest.mark.slow
def test_a_bad_token_fails_before_any_work(tmp_path):
    with FakeHub(tokens={TOKEN: "tester"}) as hub:
        started = time.perf_counter()
        result = run_training(*TINY, "--output_dir", "never", "--push_to_hub", "--hub_model_id", "tester/x",
                              "--hub_token", "hf_wrong", cwd=tmp_path, env=online(tmp_path, hub.endpoint), check=False)
        seconds = time.perf_counter() - started
        foreign = run_training(*TINY, "--output_dir", "never2", "--push_to_hub", "--hub_model_id", "someone-else/x",
                               "--hub_token", TOKEN, cwd=tmp_path, env=online(tmp_path, hub.endpoint), check=False)
    assert result.returncode != 0 and "401" in result.stderr
    assert foreign.returncode != 0 and "403" in foreign.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "never" / "checkpoints").exists()  # nothing started
    assert seconds < 120


def test_card_metadata_names_the_base_model_and_hub_datasets(monkeypatch):
    metrics = {f"{d}_{m}": 50.0 for d in ("t2v", "v2t") for m in ("R1", "R5", "R10", "MedianR", "MeanR")}
    metrics.update(num_captions=10, num_videos=10, num_dropped_videos=1)
    results = {
        "model": "openai/clip-vit-base-patch32", "base_model": "openai/clip-vit-base-patch32",
        "runs": {"clip2video": {"metrics": metrics, "timings": {"training_seconds": 1.0}}},
        "test_split": {"dataset": "hub", "dataset_name": "someone/webvid-captions", "split": "test"},
        "args": {"eval_only": False, "num_train_epochs": 1, "global_batch_size": 2, "learning_rate": 1e-4,
                 "clip_learning_rate_scale": 1e-3, "weight_decay": 0.2, "warmup_proportion": 0.1, "num_frames": 12,
                 "max_text_length": 32, "max_grad_norm": 1.0, "seed": 0},
    }
    card = ModelCard(str(model_card(results, "me/clip2video-webvid")))
    assert card.data.base_model == "openai/clip-vit-base-patch32"
    assert card.data.datasets == ["someone/webvid-captions"]
    assert card.data.eval_results[0].dataset_name == "someone/webvid-captions"
    assert "1 videos that could not be decoded left out" in card.text
    with FakeHub(tokens={}) as hub:  # the Hub's metadata validation (ModelCard.validate posts to it)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.endpoint)
        card.validate()
        bad = ModelCard(str(card).replace("pipeline_tag: video-classification", "pipeline_tag: video-magic"))
        with pytest.raises(ValueError, match="pipeline_tag"):
            bad.validate()
    results["test_split"]["dataset_name"] = "webdataset"  # a builder, not a Hub dataset
    assert ModelCard(str(model_card(results, "me/x"))).data.datasets is None


def test_a_plain_upload_of_a_published_folder_leaves_the_run_files_behind(tmp_path):
    """`hf upload OUT` / `upload_folder` without our ignore patterns: the client sends the published .gitignore
    with its pre-upload request and the Hub (here the fake one, applying it as the Hub does) skips what it matches."""
    folder = tmp_path / "out"
    for name in ("config.json", "README.md", "model.safetensors", "sub/nested.npy", "checkpoints/step_2/optimizer.bin",
                 "logs/events.out", "frame_cache/abc.frames.npy", "run.json", ".published.json"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    (folder / ".gitignore").write_text(HUB_GITIGNORE)
    with FakeHub(tokens={TOKEN: "tester"}) as hub:
        api = huggingface_hub.HfApi(endpoint=hub.endpoint, token=TOKEN)
        api.create_repo("tester/plain")
        api.upload_folder(repo_id="tester/plain", folder_path=folder)
    assert set(hub.commits[0]["files"]) == {"config.json", "README.md", "model.safetensors", ".gitignore"}


def test_revision_and_pull_request_options(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    metrics = {"t2v_R1": 12.5}
    (folder / "results.json").write_text(json.dumps({"runs": {"clip2video": {"metrics": metrics}},
                                                     "test_split": {"dataset": "synthetic"}}))
    (folder / "README.md").write_text("card")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "big.bin").write_bytes(b"x")
    with FakeHub(tokens={TOKEN: "tester"}) as hub:
        api = prepare_hub_repo("tester/m", token=TOKEN, revision="experiments", endpoint=hub.endpoint)
        push_folder(api, "tester/m", folder, revision="experiments")
        push_folder(api, "tester/m", folder, create_pr=True)
    assert hub.commits[0]["revision"] == "experiments" and set(hub.commits[0]["files"]) == {"results.json", "README.md"}
    assert hub.commits[1]["create_pr"] and hub.repos["tester/m"]["main"] == {}  # a PR does not touch main


# A kill at every step of the publish -----------------------------------------------------------------------------

PREVIOUS = {"model.safetensors": "old weights", "config.json": "{\"old\": 1}", "dropped_code.py": "# old only"}
NEW = {"model.safetensors": "new weights", "config.json": "{\"new\": 1}", "results.json": "{}", "README.md": "card"}
RUN_FILES = {"checkpoints/step_00000002/model.safetensors": "step 2", "checkpoints/step_00000004/model.safetensors":
             "step 4", "checkpoints/step_00000004/run.json": "{}", "logs/events": "log", "run.json": "{}",
             "frame_cache/0123456789abcdef01234567.masks.npy": "cache"}


def _writer(files: dict):
    def write(folder: Path):
        for name, text in files.items():
            (folder / name).write_text(text)

    return write


def _snapshot(folder: Path) -> dict:
    """Every file's text; of the publish record, the files it lists."""
    files = {path.relative_to(folder).as_posix(): path.read_text() for path in sorted(folder.rglob("*"))
             if path.is_file()}
    if ".published.json" in files:
        files[".published.json"] = json.loads(files[".published.json"])["files"]
    return files


def _publish_in_a_child(output_dir: Path, files: dict, kill_after: int | None) -> int:
    """Publishes `files` in a forked process that is killed (`os._exit`: no cleanup, no finally) right after its
    `kill_after`-th file system operation; returns the number of operations it made (exit status 0) or -1 when
    killed."""
    from clip2video.pipelines.publishing import staging as publish

    return run_forked_until_killed(lambda: publish.publish_atomically(output_dir, _writer(files)), kill_after,
                                   output_dir.parent / "operations")


def test_a_kill_at_every_step_of_a_publish_loses_nothing(tmp_path):
    from clip2video.pipelines.publishing.staging import STAGING_NAME, finish_interrupted_publish, publish_atomically

    base = tmp_path / "base" / "run"
    base.mkdir(parents=True)
    for name, text in RUN_FILES.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(text)
    publish_atomically(base, _writer(PREVIOUS))
    before = _snapshot(base)
    old_published = {name: text for name, text in before.items() if name in PREVIOUS}
    counting = tmp_path / "count" / "run"
    shutil.copytree(base, counting)
    steps = _publish_in_a_child(counting, NEW, kill_after=None)
    assert _snapshot(counting).items() >= {**RUN_FILES, **NEW}.items() and "dropped_code.py" not in _snapshot(counting)
    assert steps > 10

    outcomes = []
    for kill_after in range(1, steps + 1):
        output_dir = tmp_path / f"kill{kill_after}" / "run"
        shutil.copytree(base, output_dir)
        assert _publish_in_a_child(output_dir, NEW, kill_after) == -1
        killed = _snapshot(output_dir)
        # The run's own files never move: every checkpoint is there right after the kill.
        assert {name: killed.get(name) for name in RUN_FILES} == RUN_FILES, kill_after
        finish_interrupted_publish(output_dir)  # what the next start does
        after = _snapshot(output_dir)
        published = {name: text for name, text in after.items() if name in {**PREVIOUS, **NEW}}
        assert published in (old_published, NEW), (kill_after, published)
        assert {name: after.get(name) for name in RUN_FILES} == RUN_FILES
        assert not (output_dir / STAGING_NAME).exists(), kill_after
        outcomes.append(published == NEW)
        publish_atomically(output_dir, _writer(NEW))  # and the next publish goes through
        assert _snapshot(output_dir) == _snapshot(counting), kill_after
    # Killed before the manifest was complete: the previous files; after it: the new ones, finished by the next start.
    assert outcomes == sorted(outcomes) and any(outcomes) and not all(outcomes)


def test_a_staging_folder_with_foreign_files_is_never_deleted(tmp_path):
    from clip2video.pipelines.publishing.staging import (
        STAGING_MARKER, STAGING_NAME, PublishInterrupted, finish_interrupted_publish, publish_atomically,
    )

    output_dir = tmp_path / "run"
    staging = output_dir / STAGING_NAME
    staging.mkdir(parents=True)
    (staging / "notes.odt").write_text("mine")
    with pytest.raises(PublishInterrupted, match="not made by training/run.py"):
        publish_atomically(output_dir, _writer(NEW))
    (staging / STAGING_MARKER).write_text("")
    (staging / "model.safetensors").write_text("half")  # what an interrupted publish wrote
    with pytest.raises(PublishInterrupted, match=r"also holds files it did not write \(notes.odt\)"):
        finish_interrupted_publish(output_dir)
    assert (staging / "notes.odt").read_text() == "mine"
    (staging / "notes.odt").unlink()
    assert "cleared the incomplete publish" in finish_interrupted_publish(output_dir)
    assert sorted(path.name for path in output_dir.iterdir()) == []

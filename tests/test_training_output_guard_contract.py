"""`training/checkpoints.py`'s claim on the output folder, in process (accelerate's Accelerator on the CPU), from
docs/training.md's "One run per output folder":

- a folder that holds another run's files is refused, naming it, and left byte for byte as it was;
- `--eval_only` never writes into a folder that holds a model (a publish, a checkpoint, weights in any format); only
  into an empty folder or one of earlier evaluation results;
- `--overwrite_output_dir` clears only what training/run.py wrote (run.json last), and a folder that also holds
  anything else is refused with the names, nothing deleted; never together with `--resume_from_checkpoint latest`;
- a run stopped before its first checkpoint starts again in its own folder with the same arguments, not with others;
- a resume is checked against the checkpoint's fingerprint, the differing arguments listed;
- a file is not a folder."""

import hashlib
import json
import re

import pytest
from accelerate import Accelerator

from clip2video.pipelines.publishing.staging import MANIFEST_NAME, STAGING_MARKER, STAGING_NAME
from clip2video.training.checkpoints import (
    check_output_dir_against_inputs,
    claim_output_dir,
    public_args,
    resolve_checkpoint,
    run_fingerprint,
)
from clip2video.training.run import parse_args


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


def snapshot(folder):
    return {str(path.relative_to(folder)): path.read_bytes() if path.is_file() else None
            for path in sorted(folder.rglob("*"))}


def args_for(output_dir, *flags):
    return parse_args(["--output_dir", str(output_dir), "--report_to", "none", *flags])


def claim(accelerator, output_dir, *flags, fingerprint=None, **overrides):
    args = args_for(output_dir, *flags)
    vars(args).update(overrides)  # what parse_args refuses itself, for claim_output_dir's own check
    fingerprint = fingerprint or run_fingerprint(args)
    claim_output_dir(args, accelerator, fingerprint)
    return fingerprint


def recorded(output_dir):
    return json.loads((output_dir / "run.json").read_text())


def write(folder, files):
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def eval_flags(tmp_path):
    (tmp_path / "model").mkdir(exist_ok=True)
    return ["--eval_only", "--model_name_or_path", str(tmp_path / "model"), "--dataset", "videofolder",
            "--eval_dir", str(tmp_path / "model")]


def test_a_new_or_empty_folder_is_claimed_with_the_runs_fingerprint(accelerator, tmp_path):
    fingerprint = claim(accelerator, tmp_path / "new" / "run")
    assert recorded(tmp_path / "new" / "run") == json.loads(json.dumps(fingerprint, default=str))
    assert sorted(path.name for path in (tmp_path / "new" / "run").iterdir()) == ["run.json"]
    (tmp_path / "empty").mkdir()
    claim(accelerator, tmp_path / "empty")
    assert recorded(tmp_path / "empty")["fingerprint"] == fingerprint["fingerprint"]


@pytest.mark.parametrize("files", [
    {"notes.txt": "mine"},
    {"run.json": json.dumps({"fingerprint": "another"}), "checkpoints/step_00000002/model.safetensors": "w"},
    {"model.safetensors": "w", "config.json": "{}", ".published.json": json.dumps({"files": ["model.safetensors"]})},
    {f"file{i}.txt": "x" for i in range(10)},
])
def test_another_runs_folder_is_refused_by_name_and_left_as_it_was(accelerator, tmp_path, files):
    write(tmp_path, files)
    before = snapshot(tmp_path)
    listed = ", ".join(sorted({name.split("/")[0] for name in files})[:8])
    with pytest.raises(FileExistsError, match=rf"^--output_dir {re.escape(str(tmp_path))} already holds another run's "
                                              rf"files \({re.escape(listed)}\)\. Pass --overwrite_output_dir to clear "
                                              r"it, --resume_from_checkpoint latest to continue that run, or choose "
                                              r"another --output_dir\.$"):
        claim(accelerator, tmp_path)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("files", [
    {"model.safetensors": "weights"},  # a downloaded or converted model
    {"model-00001-of-00002.safetensors": "w", "model-00002-of-00002.safetensors": "w",
     "model.safetensors.index.json": "{}", "config.json": "{}"},  # a sharded model
    {"pytorch_model.bin": "weights", "config.json": "{}"},  # an older format
    {".published.json": json.dumps({"files": ["weights.bin"]}), "weights.bin": "w"},  # a publish of any files
    {"checkpoints/step_00000004/model.safetensors": "w", "results.json": "{}"},  # a run's checkpoints
])
def test_eval_only_never_writes_into_a_folder_holding_a_model(accelerator, tmp_path, files):
    out = tmp_path / "published"
    out.mkdir()
    write(out, files)
    before = snapshot(out)
    with pytest.raises(FileExistsError, match=rf"^--output_dir {re.escape(str(out))} already holds another run's"):
        claim(accelerator, out, *eval_flags(tmp_path))
    assert snapshot(out) == before


def test_eval_only_may_write_where_only_earlier_evaluation_results_are(accelerator, tmp_path):
    out = tmp_path / "evaluation"
    out.mkdir()
    write(out, {"results.json": "{}", "README.md": "an earlier evaluation", "logs/events": "x"})
    fingerprint = claim(accelerator, out, *eval_flags(tmp_path))
    assert recorded(out)["fingerprint"] == fingerprint["fingerprint"]
    assert (out / "results.json").read_text() == "{}"  # claiming writes run.json only


def test_overwrite_clears_only_what_a_run_wrote_and_run_json_is_rewritten(accelerator, tmp_path):
    ours = {"run.json": json.dumps({"fingerprint": "earlier"}), "logs/events.out": "x",
            "checkpoints/step_00000002/model.safetensors": "w", "frame_cache/0123456789abcdef01234567.frames.npy": "f",
            "model.safetensors": "w", "config.json": "{}", ".published.json": json.dumps(
                {"files": ["model.safetensors", "config.json"]})}
    write(tmp_path, ours)
    fingerprint = claim(accelerator, tmp_path, "--overwrite_output_dir")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run.json"]
    assert recorded(tmp_path)["fingerprint"] == fingerprint["fingerprint"]


@pytest.mark.parametrize("count", [1, 8, 9])
def test_overwrite_refuses_a_folder_holding_anything_else_and_deletes_nothing(accelerator, tmp_path, count):
    write(tmp_path, {"run.json": json.dumps({"fingerprint": "earlier"}), "logs/events.out": "x"})
    foreign = sorted(f"mine{i}.txt" for i in range(count))
    write(tmp_path, dict.fromkeys(foreign, "keep"))
    before = snapshot(tmp_path)
    named = ", ".join(foreign[:8]) + (" ..." if count > 8 else "")
    message = (rf"^--overwrite_output_dir clears only what training/run\.py wrote, and --output_dir "
               rf"{re.escape(str(tmp_path))} also holds {re.escape(named)}: move those away or choose another "
               r"--output_dir \(nothing was deleted\)$")
    with pytest.raises(FileExistsError, match=message):
        claim(accelerator, tmp_path, "--overwrite_output_dir")
    assert snapshot(tmp_path) == before


def test_overwrite_and_resume_latest_contradict_each_other(accelerator, tmp_path):
    write(tmp_path, {"run.json": "{}", "checkpoints/step_00000002/run.json": "{}"})
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"^--overwrite_output_dir clears the checkpoints that --resume_from_checkpoint"
                                         r" latest would resume"):
        claim(accelerator, tmp_path, "--resume_from_checkpoint", "latest", overwrite_output_dir=True)
    assert snapshot(tmp_path) == before


def test_a_run_stopped_before_its_first_checkpoint_starts_again_with_the_same_arguments_only(accelerator, tmp_path):
    fingerprint = claim(accelerator, tmp_path)
    (tmp_path / "logs").mkdir()
    again = claim(accelerator, tmp_path)  # the same run, restarted in its own folder
    assert again["fingerprint"] == fingerprint["fingerprint"]
    with pytest.raises(FileExistsError, match=r"already holds another run's files \(logs, run\.json\)"):
        claim(accelerator, tmp_path, "--learning_rate", "0.5")
    (tmp_path / "run.json").write_text("not json")
    with pytest.raises(FileExistsError, match=r"already holds another run's files \(logs, run\.json\)"):
        claim(accelerator, tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"fingerprint": fingerprint["fingerprint"]}))
    (tmp_path / "notes.txt").write_text("mine")  # anything else: not a stopped run's folder
    with pytest.raises(FileExistsError, match=r"already holds another run's files \(logs, notes\.txt, run\.json\)"):
        claim(accelerator, tmp_path)


def checkpoint(folder, fingerprint):
    step = folder / "checkpoints" / "step_00000002"
    step.mkdir(parents=True)
    (step / "run.json").write_text(json.dumps(fingerprint, default=str))
    (folder / "run.json").write_text(json.dumps(fingerprint, default=str))
    return step


def test_a_resume_is_checked_against_the_checkpoints_fingerprint(accelerator, tmp_path):
    fingerprint = run_fingerprint(args_for(tmp_path, "--learning_rate", "0.001", "--seed", "3"))
    step = checkpoint(tmp_path, fingerprint)
    # Operational flags may change; what is trained may not.
    claim(accelerator, tmp_path, "--learning_rate", "0.001", "--seed", "3", "--resume_from_checkpoint", "latest",
          "--num_workers", "0")
    message = (rf"^{re.escape(str(step))} belongs to a run with other training arguments: --learning_rate 0\.001 "
               r"there, 0\.002 here; --seed 3 there, 42 here\. Resume with the same arguments, or start a new run "
               r"\(--overwrite_output_dir, or another --output_dir\)\.$")
    with pytest.raises(ValueError, match=message):
        claim(accelerator, tmp_path, "--resume_from_checkpoint", "latest")
    with pytest.raises(ValueError, match=r"belongs to a run with other training arguments: --seed 3 there, 4 here\."):
        claim(accelerator, tmp_path / "elsewhere", "--learning_rate", "0.001", "--seed", "4",
              "--resume_from_checkpoint", str(step))
    (step / "run.json").unlink()
    with pytest.raises(ValueError, match=rf"^{re.escape(str(step))} has no run\.json: it was not written by "
                                         r"training/run\.py \(or by an older version\), so it cannot be checked "
                                         r"against this run's arguments\. Start a new run in another --output_dir\.$"):
        claim(accelerator, tmp_path, "--resume_from_checkpoint", "latest")


def test_resume_latest_needs_a_checkpoint(accelerator, tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"^no checkpoint in {re.escape(str(tmp_path / 'fresh' / 'checkpoints'))}$"):
        claim(accelerator, tmp_path / "fresh", "--resume_from_checkpoint", "latest")
    assert not (tmp_path / "fresh" / "run.json").exists()


def test_a_file_is_not_an_output_folder(accelerator, tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(NotADirectoryError, match=rf"^--output_dir {re.escape(str(tmp_path / 'out'))} is a file"):
        claim(accelerator, tmp_path / "out")
    assert (tmp_path / "out").read_text() == "a file"


def test_the_recorded_fingerprint_is_the_digest_of_the_arguments_it_lists(tmp_path):
    held = run_fingerprint(args_for(tmp_path))
    digest = hashlib.sha256(json.dumps(held["arguments"], sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert held["fingerprint"] == digest


def test_a_resume_lists_arguments_that_only_one_side_has(accelerator, tmp_path):
    # A checkpoint of a version with a flag this one no longer has, or without the list of its arguments at all.
    theirs = run_fingerprint(args_for(tmp_path))
    theirs["arguments"]["old_flag"] = 1
    theirs["fingerprint"] = "0" * 16
    step = checkpoint(tmp_path, theirs)
    with pytest.raises(ValueError, match=r"other training arguments: --old_flag 1 there, None here\. Resume"):
        claim(accelerator, tmp_path, "--resume_from_checkpoint", "latest")
    (step / "run.json").write_text(json.dumps({"fingerprint": "0" * 16}))
    with pytest.raises(ValueError, match=r"other training arguments: .*--seed None there, 42 here"):
        claim(accelerator, tmp_path, "--resume_from_checkpoint", "latest")


@pytest.mark.parametrize("names, latest", [
    (["step_00000002", "step_00000010", "step_00000004"], "step_00000010"),  # by number, not by name's order
    (["step_00000002", "step_00000004.replaced"], "step_00000004.replaced"),  # killed before the new one arrived
    (["step_00000004", "step_00000004.replaced"], "step_00000004"),  # the new one arrived
    (["step_00000002", "step_00000004.partial", "step_00000006.tmp"], "step_00000002"),  # incomplete ones never
])
def test_latest_is_the_last_complete_checkpoint(tmp_path, names, latest):
    for name in names:
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
    assert resolve_checkpoint("latest", tmp_path) == str(tmp_path / "checkpoints" / latest)
    assert resolve_checkpoint(str(tmp_path / "elsewhere"), tmp_path) == str(tmp_path / "elsewhere")


def test_a_publish_killed_after_its_manifest_is_finished_before_the_folder_is_claimed(accelerator, tmp_path, capsys):
    staging = tmp_path / STAGING_NAME
    staging.mkdir()
    (staging / STAGING_MARKER).write_text("")
    (staging / "model.safetensors").write_text("new weights")
    (staging / MANIFEST_NAME).write_text(json.dumps({"files": ["model.safetensors"], "previous": []}))
    with pytest.raises(FileExistsError, match="already holds another run's files"):  # a published model now
        claim(accelerator, tmp_path)
    assert (tmp_path / "model.safetensors").read_text() == "new weights" and not staging.exists()
    assert f"finished the publish of {tmp_path} that was interrupted" in capsys.readouterr().out


def test_recorded_arguments_never_hold_the_token(tmp_path):
    args = args_for(tmp_path, "--push_to_hub", "--hub_model_id", "someone/model", "--hub_token", "hf_secret")
    shown = public_args(args)
    assert shown == {**vars(args), "hub_token": "<redacted>"} and args.hub_token == "hf_secret"
    assert public_args(args_for(tmp_path))["hub_token"] is None  # no token: nothing to hide, nothing invented


def test_overwriting_a_folder_the_run_reads_is_refused_with_every_input_named_and_what_to_do(tmp_path):
    # The refusals come before anything is touched; their whole message says which inputs and what to do instead.
    out = tmp_path / "out"
    for folder in (out / "model", out / "videos"):
        folder.mkdir(parents=True)
    args = args_for(out, *eval_flags(tmp_path))
    vars(args).update(model_name_or_path=str(out / "model"), eval_dir=str(out / "videos"), overwrite_output_dir=True)
    with pytest.raises(ValueError, match=(
        rf"^--overwrite_output_dir would clear --output_dir {re.escape(str(out))}, which holds what this run reads "
        rf"\(--model_name_or_path {re.escape(str(out / 'model'))}, --eval_dir {re.escape(str(out / 'videos'))}\): "
        r"choose another --output_dir \(nothing was deleted\)$"
    )):
        check_output_dir_against_inputs(args)
    vars(args).update(resume_from_checkpoint="latest", model_name_or_path=str(tmp_path / "model"),
                      eval_dir=str(tmp_path / "model"))
    with pytest.raises(ValueError, match=(
        r"^--overwrite_output_dir clears the checkpoints that --resume_from_checkpoint latest would resume: pass "
        r"one of them \(resume: drop --overwrite_output_dir; start afresh: drop --resume_from_checkpoint\)$"
    )):
        check_output_dir_against_inputs(args)
    vars(args).update(resume_from_checkpoint=None)
    check_output_dir_against_inputs(args)  # inputs outside the folder: nothing to refuse


def test_eval_only_never_writes_into_its_own_runs_published_folder_even_resuming_its_checkpoint(accelerator, tmp_path):
    # A finished run's folder: its checkpoints and its publish. Evaluating one of its checkpoints with --eval_only
    # would publish that checkpoint's weights and results over the run's published model: refused like any folder
    # holding a model, the folder left as it was (evaluate it into another --output_dir).
    out = tmp_path / "run"
    step = checkpoint(out, run_fingerprint(args_for(out)))
    write(out, {".published.json": json.dumps({"files": ["model.safetensors", "results.json"]}),
                "model.safetensors": "final weights", "results.json": "{}"})
    before = snapshot(out)
    for resumed in ("latest", str(step)):
        with pytest.raises(FileExistsError, match=rf"^--output_dir {re.escape(str(out))} already holds another run's"):
            claim(accelerator, out, "--eval_only", "--resume_from_checkpoint", resumed)
        assert snapshot(out) == before
    claim(accelerator, tmp_path / "evaluation", "--eval_only", "--resume_from_checkpoint", str(step))
    assert recorded(tmp_path / "evaluation")["fingerprint"] == run_fingerprint(args_for(out))["fingerprint"]

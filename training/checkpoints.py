"""A run's claim on its output folder and its checkpoints: the fingerprint of the arguments that change what is
trained, the refusal to mix two runs in one folder, atomic checkpoints and the check before resuming one."""

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from accelerate.utils import gather_object

# Flags that change how a run is carried out, not what it trains: a checkpoint may be resumed with other values.
OPERATIONAL_FLAGS = {
    "output_dir", "resume_from_checkpoint", "overwrite_output_dir", "eval_only", "num_workers", "cpu_threads",
    "report_to", "checkpointing_steps", "eval_batch_size", "dual_softmax", "max_bad_videos", "push_to_hub",
    "hub_model_id", "hub_token", "hub_private", "hub_revision", "hub_create_pr", "data_dir", "videos_dir",
    "annotations_dir", "train_dir", "eval_dir", "data_files", "eval_split", "max_eval_samples",
}
SECRET_FLAGS = ("hub_token",)


def public_args(args) -> dict:
    """The arguments as recorded in results.json, checkpoints and trackers: secrets left out."""
    return {name: ("<redacted>" if name in SECRET_FLAGS and value else value) for name, value in vars(args).items()}


def run_fingerprint(args) -> dict:
    """What a checkpoint must share with the run resuming it: every argument that changes what is trained."""
    trained = {name: value for name, value in sorted(vars(args).items()) if name not in OPERATIONAL_FLAGS}
    digest = hashlib.sha256(json.dumps(trained, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"fingerprint": digest, "arguments": trained}


@dataclass
class TrainingProgress:
    """Where training stands; saved in every checkpoint (`accelerator.register_for_checkpointing`) so a resume
    continues with the same data order. With --streaming, `stream_states` holds every process's `StreamingBatches`
    state."""

    epoch: int = 0
    batches_done_in_epoch: int = 0
    optimizer_steps: int = 0
    stream_states: list[dict] | None = None

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict):
        # A field the checkpoint does not record starts from its default, not from what this object held before.
        for field in fields(self):
            setattr(self, field.name, state.get(field.name, field.default))


def save_checkpoint(accelerator, output_dir: Path, progress: TrainingProgress, fingerprint: dict, stream=None):
    """`accelerator.save_state` into `checkpoints/step_<n>` with the run's fingerprint in `run.json`, written under
    another name and renamed when complete, so a run killed while saving never leaves a half-written checkpoint."""
    if stream is not None:
        progress.stream_states = gather_object([stream.state_dict()]) if accelerator.num_processes > 1 else [stream.state_dict()]
    final = output_dir / "checkpoints" / f"step_{progress.optimizer_steps:08d}"
    partial = final.with_name(final.name + ".partial")
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / "run.json").write_text(json.dumps(fingerprint, indent=2, default=str))
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
    accelerator.wait_for_everyone()


def resolve_checkpoint(checkpoint: str, output_dir: Path) -> str:
    if checkpoint != "latest":
        return checkpoint
    candidates = sorted(path for path in (output_dir / "checkpoints").glob("step_*") if path.suffix != ".partial")
    if not candidates:
        raise FileNotFoundError(f"no checkpoint in {output_dir / 'checkpoints'}")
    return str(candidates[-1])


def claim_output_dir(args, accelerator, fingerprint: dict):
    """One run per output folder: a folder with another run's files is refused, unless --overwrite_output_dir
    (cleared) or --resume_from_checkpoint of a checkpoint whose run fingerprint matches this run's arguments."""
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"--output_dir {output_dir} is a file")
    contents = set(os.listdir(output_dir)) if output_dir.is_dir() else set()
    if contents <= {"run.json", "logs"} and (output_dir / "run.json").is_file():
        # This same run, stopped before its first checkpoint (only its fingerprint and logs are there): restart it.
        try:
            same_run = json.loads((output_dir / "run.json").read_text()).get("fingerprint") == fingerprint["fingerprint"]
        except (OSError, ValueError):
            same_run = False
        if same_run:
            contents = set()
    occupied = bool(contents)
    if occupied and not args.overwrite_output_dir:
        if args.resume_from_checkpoint:
            check_resumable(resolve_checkpoint(args.resume_from_checkpoint, output_dir), fingerprint)
        elif args.eval_only and not (output_dir / "checkpoints").exists() and not (output_dir / "model.safetensors").exists():
            pass  # an earlier evaluation's results only
        else:
            contents = sorted(entry.name for entry in output_dir.iterdir())[:8]
            raise FileExistsError(
                f"--output_dir {output_dir} already holds another run's files ({', '.join(contents)}). Pass "
                "--overwrite_output_dir to clear it, --resume_from_checkpoint latest to continue that run, or "
                "choose another --output_dir."
            )
    elif args.resume_from_checkpoint and args.resume_from_checkpoint != "latest":
        check_resumable(args.resume_from_checkpoint, fingerprint)
    elif args.resume_from_checkpoint:
        resolve_checkpoint("latest", output_dir)  # a clear error when there is none
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if occupied and args.overwrite_output_dir:
            for entry in list(output_dir.iterdir()):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "run.json").write_text(json.dumps(fingerprint, indent=2, default=str))
    accelerator.wait_for_everyone()


def check_resumable(checkpoint: str, fingerprint: dict):
    recorded_path = Path(checkpoint) / "run.json"
    if not recorded_path.is_file():
        raise ValueError(
            f"{checkpoint} has no run.json: it was not written by training/run.py (or by an older version), so it "
            "cannot be checked against this run's arguments. Start a new run in another --output_dir."
        )
    recorded = json.loads(recorded_path.read_text())
    if recorded.get("fingerprint") == fingerprint["fingerprint"]:
        return
    theirs, ours = recorded.get("arguments", {}), fingerprint["arguments"]
    differences = [
        f"--{name} {theirs.get(name)!r} there, {ours.get(name)!r} here"
        for name in sorted(set(theirs) | set(ours)) if theirs.get(name) != ours.get(name)
    ]
    raise ValueError(
        f"{checkpoint} belongs to a run with other training arguments: {'; '.join(differences)}. Resume with the "
        "same arguments, or start a new run (--overwrite_output_dir, or another --output_dir)."
    )

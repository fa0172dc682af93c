"""A run's claim on its output folder and its checkpoints: the fingerprint of the arguments that change what is
trained, the refusal to mix two runs in one folder, atomic checkpoints and the check before resuming one."""

import glob
import hashlib
import json
import os
import re
import shutil
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import datasets
from accelerate.utils import gather_object

from clip2video.pipelines.publishing.staging import (
    PUBLISHED_RECORD,
    STAGING_MARKER,
    STAGING_NAME,
    finish_interrupted_publish,
    published_files,
)

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
        # A checkpoint of the same step (a resumed run saving it again) is set aside, not deleted, until the new one
        # is in place: killed in between, `resolve_checkpoint` still finds a complete one.
        replaced = final.with_name(final.name + ".replaced")
        if final.exists():
            if replaced.exists():
                shutil.rmtree(replaced)
            os.replace(final, replaced)
        os.replace(partial, final)
        if replaced.exists():
            shutil.rmtree(replaced)
    accelerator.wait_for_everyone()


def resolve_checkpoint(checkpoint: str, output_dir: Path) -> str:
    if checkpoint != "latest":
        return checkpoint
    found = {path.name: path for path in (output_dir / "checkpoints").glob("step_*")
             if re.fullmatch(r"step_\d+(\.replaced)?", path.name)}
    # A checkpoint set aside while its step was saved again stands in for it when the new one never arrived.
    candidates = sorted(path for name, path in found.items()
                        if not name.endswith(".replaced") or name.removesuffix(".replaced") not in found)
    if not candidates:
        raise FileNotFoundError(f"no checkpoint in {output_dir / 'checkpoints'}")
    return str(candidates[-1])


# What a run writes into its output folder besides the published files (`.published.json` lists those): only these
# may be cleared by --overwrite_output_dir. `logs/` holds whatever the trackers write.
RUN_ENTRIES = {
    "run.json": None,
    "logs": None,
    "checkpoints": re.compile(r"step_\d+(\.partial|\.replaced)?"),
    "frame_cache": re.compile(r"[0-9a-f]{24}\.(frames\.npy|masks\.npy|bad\.json)"),
}


def _foreign_entries(output_dir: Path) -> list[str]:
    """The entries of `output_dir` that training/run.py did not write (its run files, the files its last publish
    recorded, its staging folder): what --overwrite_output_dir must not delete."""
    published = set(published_files(output_dir)) | {PUBLISHED_RECORD}
    foreign = []
    for entry in sorted(output_dir.iterdir()):
        name = entry.name
        if name in published or (name == STAGING_NAME and entry.is_dir() and (entry / STAGING_MARKER).is_file()):
            continue
        if name not in RUN_ENTRIES or entry.is_symlink() or entry.is_dir() != (name != "run.json"):
            foreign.append(name)
        elif RUN_ENTRIES[name] is not None:
            foreign += [f"{name}/{child.name}" for child in sorted(entry.iterdir())
                        if not RUN_ENTRIES[name].fullmatch(child.name) or child.is_symlink()]
    # A published file in a sub-folder is recorded by its path: its top folder holds only recorded files.
    return [name for name in foreign if not any(recorded.startswith(name + "/") for recorded in published)
            or _foreign_in_published_folder(output_dir, name, published)]


def _foreign_in_published_folder(output_dir: Path, name: str, published: set[str]) -> bool:
    return any(
        path.relative_to(output_dir).as_posix() not in published
        for path in (output_dir / name).rglob("*") if not path.is_dir() or path.is_symlink()
    )


def _clear_run(output_dir: Path):
    """Deletes what an earlier run wrote (after `_foreign_entries` found nothing else): the published files, then
    the record of them, the checkpoints and caches, and run.json last, so a clear killed part-way leaves a folder
    that is still recognised as a run's and can be cleared again."""
    for name in published_files(output_dir):
        path = output_dir / name
        if path.is_file() or path.is_symlink():
            path.unlink()
    for name in published_files(output_dir):  # sub-folders the publish made, once empty
        for parent in (output_dir / name).parents:
            if parent == output_dir:
                break
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
    (output_dir / PUBLISHED_RECORD).unlink(missing_ok=True)
    for name in ("checkpoints", "frame_cache", "logs"):
        if (output_dir / name).is_dir():
            shutil.rmtree(output_dir / name)
    (output_dir / "run.json").unlink(missing_ok=True)


# What makes a folder a model's (a run's checkpoints, a publish, weights converted or downloaded in any format):
# --eval_only never writes into one.
MODEL_ENTRIES = ("checkpoints", PUBLISHED_RECORD, "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")


def _holds_a_model(output_dir: Path) -> bool:
    return any(any(output_dir.glob(pattern)) for pattern in MODEL_ENTRIES)


def _within(path, folder: Path) -> bool:
    path, folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return path == folder or folder in path.parents


def _glob_root(pattern: str) -> str:
    """The folder a glob pattern (`shards/train-*.tar`) reads from: its part before the first wildcard."""
    head = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    return head if head.endswith(("/", os.sep)) or not head else os.path.dirname(head) or "."


def input_paths(args) -> dict[str, str]:
    """Every local path the run reads, by flag: the model, the checkpoint it resumes, the data."""
    paths = {}
    for flag in ("model_name_or_path", "resume_from_checkpoint", "train_dir", "eval_dir", "annotations_dir",
                 "videos_dir", "dataset_dir", "dataset_name"):
        value = getattr(args, flag, None)
        if value and value != "latest" and os.path.exists(value):
            paths[f"--{flag} {value}"] = value
    if getattr(args, "dataset", None) == "synthetic":
        paths[f"--data_dir {args.data_dir}"] = args.data_dir
    for pattern in getattr(args, "data_files", None) or []:
        split, separator, rest = pattern.partition("=")
        rest = rest if separator and "/" not in split and split else pattern
        if "://" not in rest:
            paths[f"--data_files {pattern}"] = _glob_root(rest)
    return paths


def check_output_dir_against_inputs(args):
    """With --overwrite_output_dir, refuses an output folder that is, or holds, anything the run reads: clearing
    it would delete the model, checkpoint or data before they are read. Called before anything is touched."""
    if not args.overwrite_output_dir:
        return
    if args.resume_from_checkpoint == "latest":
        raise ValueError(
            "--overwrite_output_dir clears the checkpoints that --resume_from_checkpoint latest would resume: pass "
            "one of them (resume: drop --overwrite_output_dir; start afresh: drop --resume_from_checkpoint)"
        )
    inside = [flag for flag, path in input_paths(args).items() if _within(path, Path(args.output_dir))]
    if inside:
        raise ValueError(
            f"--overwrite_output_dir would clear --output_dir {args.output_dir}, which holds what this run reads ("
            + ", ".join(inside) + "): choose another --output_dir (nothing was deleted)"
        )


def claim_output_dir(args, accelerator, fingerprint: dict):
    """One run per output folder: a folder with another run's files is refused, unless --overwrite_output_dir
    (cleared of what training/run.py wrote, and only when it holds nothing else) or --resume_from_checkpoint of a
    checkpoint whose run fingerprint matches this run's arguments. A publish that an earlier run was killed in is
    finished (or its incomplete staging cleared) first."""
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"--output_dir {output_dir} is a file")
    check_output_dir_against_inputs(args)
    _refuse_earlier_version_leftovers(output_dir)
    if accelerator.is_main_process and output_dir.is_dir():
        done = finish_interrupted_publish(output_dir)
        if done:
            print(done)
    accelerator.wait_for_everyone()
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
        # --eval_only publishes what it evaluates: never over a model, not even when it resumes this folder's run.
        if args.resume_from_checkpoint and not (args.eval_only and _holds_a_model(output_dir)):
            check_resumable(resolve_checkpoint(args.resume_from_checkpoint, output_dir), fingerprint)
        elif args.eval_only and not _holds_a_model(output_dir):
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
    if occupied and args.overwrite_output_dir:
        foreign = _foreign_entries(output_dir)
        if foreign:
            raise FileExistsError(
                f"--overwrite_output_dir clears only what training/run.py wrote, and --output_dir {output_dir} also "
                f"holds {', '.join(foreign[:8])}{' ...' if len(foreign) > 8 else ''}: move those away or choose "
                "another --output_dir (nothing was deleted)"
            )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if occupied and args.overwrite_output_dir:
            _clear_run(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "run.json").write_text(json.dumps(fingerprint, indent=2, default=str))
    accelerator.wait_for_everyone()


def _refuse_earlier_version_leftovers(output_dir: Path):
    """Earlier versions published by moving the whole folder aside (`.NAME.publishing-*`, `.NAME.previous-*` beside
    it); one killed in between left the checkpoints there. They are never deleted: the user is told."""
    parent = output_dir.resolve().parent
    if not parent.is_dir():
        return
    leftovers = sorted(str(path) for pattern in (f".{output_dir.name}.publishing-*", f".{output_dir.name}.previous-*")
                       for path in parent.glob(pattern))
    if leftovers:
        raise FileExistsError(
            f"an interrupted publish of an earlier version left {', '.join(leftovers)} beside --output_dir "
            f"{output_dir}; they may hold its checkpoints, logs and model. Move what you want to keep into "
            f"{output_dir} (checkpoints/, logs/, run.json, the model files), then remove them and run again."
        )


def data_identity(train, data_files: list[str] | None = None) -> dict:
    """What the training data is, for a resume to check against: the number of rows and a digest of every row's
    id, caption and video (its file name and size, or its embedded bytes), so the same data in another place
    resumes and changed data does not. A stream is not read ahead: its identity is its local files' names and
    sizes (`data_files`: the training split's patterns)."""
    digest = hashlib.sha256()
    if isinstance(train, datasets.IterableDataset):
        files = sorted(
            path for pattern in data_files or [] for path in glob.glob(pattern) if os.path.isfile(path)
        )
        for path in files:
            digest.update(f"{os.path.basename(path)}\0{os.path.getsize(path)}\n".encode())
        return {"rows": None, "files": len(files), "digest": digest.hexdigest()[:16]}
    table = train.select_columns(["video_id", "caption", "video"]).with_format("arrow")
    sizes = {}
    for start in range(0, len(train), 10_000):
        chunk = table[start : start + 10_000]
        video = chunk.column("video").combine_chunks()
        for video_id, caption, path, data in zip(
            chunk.column("video_id").to_pylist(), chunk.column("caption").to_pylist(),
            video.field("path").to_pylist(), video.field("bytes").to_pylist(),
        ):
            if data:
                identity = hashlib.sha256(data).hexdigest()
            else:
                if path not in sizes:
                    sizes[path] = os.path.getsize(path) if path and os.path.isfile(path) else -1
                identity = f"{os.path.basename(path or '')}:{sizes[path]}"
            digest.update(json.dumps([video_id, caption, identity]).encode() + b"\n")
    return {"rows": len(train), "digest": digest.hexdigest()[:16]}


def check_same_data(checkpoint: str, data: dict):
    """Refuses to resume `checkpoint` on other training data than it was trained on (its run.json's `data`)."""
    try:
        recorded = json.loads((Path(checkpoint) / "run.json").read_text()).get("data")
    except (OSError, ValueError):
        recorded = None
    if recorded is None:
        warnings.warn(f"{checkpoint} does not record its training data (an earlier version wrote it): the data "
                      "cannot be checked to be the same", stacklevel=2)
        return
    if recorded.get("digest") != data.get("digest"):
        raise ValueError(
            f"{checkpoint} was trained on other data: {recorded.get('rows')} training rows (digest "
            f"{recorded.get('digest')}) there, {data.get('rows')} (digest {data.get('digest')}) here (rows, captions "
            "or video files changed). Resume with the data it was trained on, or start a new run."
        )


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

"""Publishing a folder in place without ever showing half of it: the files are written into a staging folder inside
`output_dir` and moved into place one atomic rename each once all are written (`publish_atomically`).

The run's own files in `output_dir` (checkpoints, logs, caches, run.json) never move. A publish killed at any step
leaves either the previous published files or a complete staging folder that `finish_interrupted_publish` (called by
the next publish, and by `training/run.py` when it claims its folder) finishes publishing.
"""

import json
import os
import warnings
from pathlib import Path


# The output folder also holds what a run keeps that is not published: these are never moved, replaced or removed
# by a publish, and a publish may not write them.
KEPT_NAMES = ("checkpoints", "logs", "frame_cache", "run.json")
STAGING_NAME = ".publishing"  # inside output_dir: the next publish, written whole before any of it is shown
STAGING_MARKER = ".clip2video-staging"  # the staging folder's first file: this project made the folder
MANIFEST_NAME = "publish.json"  # the staging folder's last file: the publish is complete and may be applied
PUBLISHED_RECORD = ".published.json"  # in output_dir: the files the last publish wrote (the next may replace them)
# What a publish writes (model, configurations, tokenizer, remote code, card, results): the only kinds of files an
# interrupted staging folder may be cleared of.
PUBLISHED_SUFFIXES = {".json", ".safetensors", ".py", ".md", ".txt", ".model", ".jinja"}
PUBLISHED_DOTFILES = {".gitignore"}  # no suffix of their own (Path(".gitignore").suffix is "")


class PublishInterrupted(RuntimeError):
    """A staging folder this project cannot finish or clear without deleting something it did not write."""


def _relative_files(folder: Path) -> list[str]:
    return sorted(
        path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file() or path.is_symlink()
    )


def _checked_name(name: str) -> str:
    """`name` as a published file may be named: relative, inside the folder, not one of the run's own files."""
    parts = Path(name).parts
    if (
        not parts or Path(name).is_absolute() or ".." in parts or parts[0] in KEPT_NAMES
        or parts[0] in (STAGING_NAME, PUBLISHED_RECORD)
    ):
        raise PublishInterrupted(f"{name!r} cannot be a published file (the run's own files are never replaced)")
    return name


def _write_json_atomically(path: Path, value) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as file:
        json.dump(value, file, indent=2)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


def published_files(output_dir: Path) -> list[str]:
    """The files the last publish wrote, as it recorded them (names checked: a hand-edited record names nothing
    outside the published set)."""
    try:
        files = json.loads((output_dir / PUBLISHED_RECORD).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    names = []
    for name in files if isinstance(files, list) else []:
        try:
            names.append(_checked_name(name) if isinstance(name, str) else None)
        except PublishInterrupted:
            continue
    return [name for name in names if name]


def _apply_publish(output_dir: Path, staging: Path) -> None:
    """Moves the staged files into `output_dir`, each with one `os.replace` (atomic), then removes the files of the
    previous publish that this one does not have, records the new set and clears the staging folder. Every step can
    be repeated: a publish killed anywhere in here is finished by running this again."""
    manifest = json.loads((staging / MANIFEST_NAME).read_text(encoding="utf-8"))
    files = [_checked_name(name) for name in manifest["files"]]
    for name in files:
        source, target = staging / name, output_dir / name
        if os.path.lexists(source):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        elif not target.is_file():
            raise PublishInterrupted(f"{staging}: {name} is neither staged nor published; publish again")
    for name in sorted(set(manifest.get("previous", [])) - set(files)):
        target = output_dir / _checked_name(name)
        if target.is_file() or target.is_symlink():
            target.unlink()
    # The record replaces the manifest in one step: from here on, the staging folder holds nothing to apply.
    os.replace(staging / MANIFEST_NAME, output_dir / PUBLISHED_RECORD)
    _clear_staging(staging)


def _clear_staging(staging: Path) -> None:
    """Removes the staging folder if it holds only what a publish writes, created after its marker (an
    interrupted write); anything else is left where it is and named."""
    marker = staging / STAGING_MARKER
    made = marker.stat().st_ctime_ns
    foreign = []
    for path in sorted(staging.rglob("*"), reverse=True):  # children before their folders
        if path == marker or (path.is_dir() and not path.is_symlink()):
            continue
        info = path.lstat()
        ours = path.is_file() and not path.is_symlink() and (
            path.suffix in PUBLISHED_SUFFIXES or path.name in PUBLISHED_DOTFILES or path.name.endswith(".partial")
        ) and info.st_ctime_ns >= made
        if not ours:
            foreign.append(path)
    if foreign:
        raise PublishInterrupted(
            f"{staging}, an interrupted publish, also holds files it did not write ("
            + ", ".join(str(path.relative_to(staging)) for path in foreign[:5])
            + "): nothing was deleted. Move them out of it and run again."
        )
    for path in sorted(staging.rglob("*"), reverse=True):
        if path != marker:
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
    marker.unlink()
    staging.rmdir()


def finish_interrupted_publish(output_dir: Path) -> str | None:
    """What a publish killed part-way left in `output_dir`: a complete staging folder is published (its manifest
    was written), an incomplete one cleared of the files it was writing. Returns what was done, or None."""
    staging = Path(output_dir) / STAGING_NAME
    if not os.path.lexists(staging):
        return None
    if staging.is_dir() and not staging.is_symlink() and not any(staging.iterdir()):
        staging.rmdir()  # killed between making it and marking it: it holds nothing
        return None
    if staging.is_symlink() or not staging.is_dir() or not (staging / STAGING_MARKER).is_file():
        raise PublishInterrupted(
            f"{staging} is in the way of publishing and was not made by training/run.py: move it away (nothing was "
            "deleted)"
        )
    if (staging / MANIFEST_NAME).is_file():
        _apply_publish(Path(output_dir), staging)
        return f"finished the publish of {output_dir} that was interrupted"
    _clear_staging(staging)
    return f"cleared the incomplete publish of {output_dir} that was interrupted (the published files are unchanged)"


def publish_atomically(output_dir: Path, write) -> None:
    """Runs `write(staging)` into `output_dir/.publishing`, then makes the files it wrote the published ones.

    Only the published files change: the run's checkpoints, logs, caches and run.json never move. The staging
    folder is complete when its manifest is written (after every file, flushed to disk); from then on each file is
    moved into place with its own atomic rename. Killed before the manifest, the published files are the previous
    ones and the next start clears the staging folder; killed after it, the next start (`finish_interrupted_publish`,
    called when a run claims its folder and before every publish) moves the rest. A staging folder is never deleted
    while it holds a file this project did not write.
    """
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    finish_interrupted_publish(output_dir)
    staging = output_dir / STAGING_NAME
    staging.mkdir()
    (staging / STAGING_MARKER).write_text("a publish of training/run.py in progress\n", encoding="utf-8")
    try:
        write(staging)
        files = [_checked_name(name) for name in _relative_files(staging) if name != STAGING_MARKER]
        for name in files:
            target = output_dir / name
            if target.is_dir() and not target.is_symlink():
                raise PublishInterrupted(f"{target} is a folder; the publish would write a file there")
            with open(staging / name, "rb") as file:
                os.fsync(file.fileno())
    except BaseException:
        try:
            _clear_staging(staging)
        except PublishInterrupted as error:  # left for the user; the write's own error is the one to report
            warnings.warn(str(error), stacklevel=2)
        raise
    _write_json_atomically(staging / MANIFEST_NAME, {"files": files, "previous": published_files(output_dir)})
    _apply_publish(output_dir, staging)

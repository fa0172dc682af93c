"""Writing a video index: resume parts, the lock, and the atomic commit of a new generation (see `video_index`).

Parts are the indexer's resume points: each holds the embeddings of a few dozen videos, written atomically under a
name that carries a checksum of its bytes, so a truncated or altered part is recognised, moved to `quarantine/` and
its videos indexed again. A commit merges the current generation and the parts into a new generation, then removes
the parts it merged: the folder holds one copy of each embedding plus the parts of an unfinished run.
"""

import errno
import fcntl
import json
import math
import os
import re
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from .video_index import (
    APPROXIMATE_ABOVE, FLOAT16_TOLERANCE, FORMAT_VERSION, METADATA_FILE, TABLE_SCHEMA, IndexDamagedError, VideoIndex,
    file_checksum, open_regular, read_metadata, write_table,
)


PARTS_DIR = "parts"
QUARANTINE_DIR = "quarantine"
LOCK_FILE = ".lock"
UNREADABLE_FILE = "unreadable.json"
# The ledger: every generation file name the indexer records before it creates the file. The indexer deletes only
# names it finds there (and parts it verified), never files matched by a prefix.
LEDGER_FILE = ".clip2video-index"
_CHUNK_ROWS = 65_536
# What may live in an index folder besides the generations' files: the indexer's fixed names.
_FIXED_NAMES = frozenset(
    {METADATA_FILE, LEDGER_FILE, f"{LEDGER_FILE}.tmp", LOCK_FILE, UNREADABLE_FILE, f".{UNREADABLE_FILE}.tmp",
     PARTS_DIR, QUARANTINE_DIR}
)
# A generation file (`embeddings-<generation>.npy`), its temporary (`.embeddings-<generation>.npy.tmp`) and the
# temporary of index.json (`.index.json.<generation>.tmp`); a generation is at least 16 hexadecimal digits.
_GENERATION_NAME = re.compile(r"[a-z_]+-[0-9a-f]{16,64}\.[a-z0-9]+")
_OWNED_NAME = re.compile(rf"(?:\.?{_GENERATION_NAME.pattern}(?:\.tmp)?|\.{re.escape(METADATA_FILE)}\.[0-9a-f]{{16,64}}\.tmp)")
_PART_NAME = re.compile(r"part-[0-9]{20}-[0-9]{3,}-[0-9a-f]{32}\.arrow")
_PART_TEMPORARY = re.compile(r"\.part-[0-9a-f]{32}\.tmp")
_PART_REPORT = re.compile(r"\.?unreadable-[0-9]{3,}\.json(?:\.tmp)?")


# ----------------------------------------------------------------------------------------------------------------
# The index folder: whose files are there
# ----------------------------------------------------------------------------------------------------------------


class IndexFolderError(ValueError):
    """The folder cannot be used as an index folder; the message names it and says why."""


def check_index_folder(index_dir: Path, videos: Path | None = None) -> None:
    """Refuses (`IndexFolderError`) an index folder that is a file, that is or lies inside the videos folder (or
    holds it), links resolved; or an existing folder holding anything the indexer did not write ("foreign" files).
    A missing or empty folder, and one holding only an index's own files, are accepted. Reads only."""
    index_dir = Path(index_dir)
    if os.path.lexists(index_dir) and not index_dir.is_dir():
        raise IndexFolderError(f"--index_dir {index_dir} is a file, not a folder: choose a new or empty folder.")
    if videos is not None:
        real_index, real_videos = index_dir.resolve(), Path(videos).resolve()
        if real_index == real_videos or real_videos in real_index.parents:
            raise IndexFolderError(
                f"--index_dir {index_dir} ({real_index}) is, or lies inside, the videos folder {real_videos}: the index "
                "is kept apart from the videos (its files would be indexed, and never mixed with yours). Choose a "
                "folder outside the videos folder."
            )
        if real_index in real_videos.parents:
            raise IndexFolderError(
                f"The videos folder {real_videos} lies inside --index_dir {index_dir} ({real_index}): an index folder "
                "holds only the index's own files. Choose a folder that does not contain the videos."
            )
    if not index_dir.is_dir():
        return
    foreign = foreign_entries(index_dir)
    if foreign:
        shown = ", ".join(foreign[:20]) + (f" and {len(foreign) - 20} more" if len(foreign) > 20 else "")
        raise IndexFolderError(
            f"--index_dir {index_dir} holds files the indexer did not write ({shown}). An index folder holds only the "
            "index's own files, so that the indexer never mistakes yours for its own: choose a new or empty folder, "
            "or move these out."
        )


def foreign_entries(index_dir: Path) -> list[str]:
    """Names in `index_dir` (and in its parts/ and quarantine/ folders) that the indexer did not write, sorted."""
    ledger = read_ledger(index_dir)
    owned = set(_FIXED_NAMES) | (ledger or set())
    if ledger is None:
        # An index written before the ledger existed: its index.json, if it is one, vouches for its generation.
        legacy = _legacy_generation(index_dir)
        if legacy is None:
            # Not an index (yet): the indexer's fixed names may be the user's files (a `.lock`, an `unreadable.json`),
            # which it would overwrite. Only its own lock file, the ledger's temporary and parts/ and quarantine/
            # folders holding nothing but the indexer's names count.
            owned = {f"{LEDGER_FILE}.tmp", PARTS_DIR, QUARANTINE_DIR} | (
                {LOCK_FILE} if _own_lock_file(index_dir / LOCK_FILE) else set()
            )
        else:
            owned |= legacy
    foreign = _unowned(index_dir, owned)
    if foreign and ledger is not None:
        # A commit running meanwhile records a name in the ledger before it creates the file: read the ledger again.
        foreign = _unowned(index_dir, owned | (read_ledger(index_dir) or set()))
    return foreign


def _unowned(index_dir: Path, owned: set[str]) -> list[str]:
    foreign = []
    with os.scandir(index_dir) as entries:
        for entry in entries:
            if entry.name not in owned:
                foreign.append(entry.name)
            elif entry.name in (PARTS_DIR, QUARANTINE_DIR):
                if entry.is_symlink() or not entry.is_dir():
                    foreign.append(entry.name)
                    continue
                pattern = (
                    re.compile(rf"{_PART_NAME.pattern}|{_PART_TEMPORARY.pattern}|{_PART_REPORT.pattern}")
                    if entry.name == PARTS_DIR else re.compile(r"part-[^/]*\.arrow")
                )
                with os.scandir(entry.path) as inner:
                    foreign += [f"{entry.name}/{e.name}" for e in inner if not pattern.fullmatch(e.name)]
    return sorted(foreign)


def _own_lock_file(path: Path) -> bool:
    """Whether `path` is a lock file as `IndexLock` leaves it: a regular file, empty or naming the holder."""
    try:
        with os.fdopen(open_regular(path), "rb") as file:
            content = file.read(200)
    except OSError:
        return False
    return re.fullmatch(rb"(?:pid [0-9]+ since [0-9: -]+\n)?", content) is not None


def _legacy_generation(index_dir: Path) -> set[str] | None:
    """The files of the generation an index.json written before the ledger names (None: no index.json of ours)."""
    try:
        metadata = read_metadata(index_dir)
    except IndexDamagedError:
        return None
    return {name for name in metadata["files"].values() if name and _GENERATION_NAME.fullmatch(name)}


def read_ledger(index_dir: Path) -> set[str] | None:
    """The names the ledger records (only names of the indexer's own pattern count), None without a ledger."""
    path = Path(index_dir) / LEDGER_FILE
    if not os.path.lexists(path):
        return None
    try:
        with os.fdopen(open_regular(path), "rb") as file:
            names = json.loads(file.read(1 << 24).decode("utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()  # damaged: it vouches for nothing (what it named is then reported as foreign)
    return {name for name in names if isinstance(name, str) and _OWNED_NAME.fullmatch(name)} if isinstance(
        names, list
    ) else set()


def write_ledger(index_dir: Path, names: set[str]) -> None:
    """Replaces the ledger atomically and durably (before any file it newly names is created)."""
    temporary = Path(index_dir) / f"{LEDGER_FILE}.tmp"
    content = {"written_by": "clip2video.apps.search.index_videos", "files": sorted(names)}
    temporary.write_text(json.dumps(content, indent=1) + "\n", encoding="utf-8")
    _fsync(temporary)
    os.replace(temporary, Path(index_dir) / LEDGER_FILE)
    _fsync_directory(Path(index_dir))


def claim_index_folder(index_dir: Path, videos: Path | None = None) -> None:
    """`check_index_folder`, then creates the folder if needed and starts its ledger (an index written before the
    ledger existed is adopted with its current generation). Call it holding the `IndexLock`."""
    check_index_folder(index_dir, videos)
    try:
        Path(index_dir).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise IndexFolderError(f"--index_dir {index_dir} cannot be created: {error}") from None
    if read_ledger(index_dir) is None:
        write_ledger(index_dir, _legacy_generation(Path(index_dir)) or set())


def collect_garbage(index_dir: Path, keep: set[str]) -> None:
    """Removes the files the ledger names, except `keep` (the generation index.json names) and folders, then
    forgets them. Files the ledger does not name are never touched."""
    ledger = read_ledger(index_dir)
    if not ledger:
        return
    removed = set()
    for name in sorted(ledger - set(keep)):
        path = Path(index_dir) / name
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                continue  # the indexer writes no folder under such a name: not its own
            path.unlink()
        except FileNotFoundError:
            pass
        removed.add(name)
    write_ledger(index_dir, ledger - removed)


def current_generation_files(index_dir: Path) -> set[str] | None:
    """The files the current index.json names, None if it is missing or cannot be read (then nothing is removed)."""
    try:
        return {name for name in read_metadata(Path(index_dir))["files"].values() if name}
    except IndexDamagedError:
        return None


def model_reference(model: str) -> dict[str, str]:
    """How an index records `--model`: a local folder as its absolute path with links resolved (`source: local`), a
    Hub repository id as typed (`source: hub`); anything else is `source: unknown` (queries must name the model).
    A local path is never recorded in a form that could later be taken for a Hub id."""
    path = Path(model).expanduser()
    if path.is_dir():
        return {"name": str(path.resolve()), "source": "local"}
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        return {"name": model, "source": "unknown"}
    return {"name": model, "source": "hub"}


# ----------------------------------------------------------------------------------------------------------------
# Lock
# ----------------------------------------------------------------------------------------------------------------


# Descriptors of the index locks this process holds. A forked child (a DataLoader decoding worker) closes its copies
# at once: an `flock` belongs to the open file, so a worker keeping a copy would hold the lock after a `kill -9` of
# the indexer until it noticed its parent was gone.
_HELD_LOCKS: set[int] = set()


def _close_locks_in_child() -> None:
    for descriptor in _HELD_LOCKS:
        try:
            os.close(descriptor)
        except OSError:
            pass
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_close_locks_in_child)


class IndexLock:
    """An exclusive `flock` on `<index_dir>/.lock` for the time of one indexing run. The kernel drops it when the
    process ends, however it ends, so a crashed run never leaves a stale lock; forked workers do not keep it.

    With `videos`, the folder is checked and claimed (`claim_index_folder`) before anything is created in it and
    again once the lock is held; raises `IndexFolderError` if it cannot be used."""

    def __init__(self, index_dir: Path, wait: bool = False, videos: Path | None = None):
        self.path = Path(index_dir) / LOCK_FILE
        self.wait = wait
        self.videos = videos
        self._descriptor = None

    def __enter__(self) -> "IndexLock":
        check_index_folder(self.path.parent, self.videos)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # No link followed (a planted link would make us truncate its target), never inherited by exec.
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
        except OSError as error:
            raise IndexFolderError(f"cannot create the lock file {self.path}: {error}") from None
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise IndexFolderError(f"{self.path} is not a regular file; the indexer's lock file cannot be used.")
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except OSError as error:
            holder = os.pread(descriptor, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(descriptor)
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise SystemExit(
                    f"{self.path.parent} is being written by another indexer ({holder}). Wait for it to finish, or "
                    "pass --wait_for_lock to start when it does."
                ) from None
            raise
        self._descriptor = descriptor
        _HELD_LOCKS.add(descriptor)
        try:
            claim_index_folder(self.path.parent, self.videos)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._descriptor not in _HELD_LOCKS:  # a forked child: its copy is already closed
            return
        _HELD_LOCKS.discard(self._descriptor)
        fcntl.flock(self._descriptor, fcntl.LOCK_UN)
        os.close(self._descriptor)
        self._descriptor = None


# ----------------------------------------------------------------------------------------------------------------
# Parts
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Part:
    """Videos embedded by one indexer, in memory. `embeddings`: (videos, embedding_dim) float32; `frames`: (sum of
    frame_counts, projection_dim) normalised frame embeddings; `frame_times`: (sum of frame_counts,) seconds."""

    paths: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    mtimes_ns: list[int] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    frame_times: list[np.ndarray] = field(default_factory=list)
    name: str = ""

    def __len__(self) -> int:
        return len(self.paths)

    def add(self, key: tuple[str, int, int], embedding: np.ndarray, frames: np.ndarray, times: np.ndarray) -> None:
        for values, value in zip((self.paths, self.sizes, self.mtimes_ns), key):
            values.append(value)
        self.embeddings.append(np.asarray(embedding, np.float32))
        self.frames.append(np.asarray(frames, np.float32))
        self.frame_times.append(np.asarray(times, np.float64))

    def keys(self) -> list[tuple[str, int, int]]:
        return list(zip(self.paths, self.sizes, self.mtimes_ns))


def write_part(parts_dir: Path, part: Part, model_hash: str, process_index: int) -> Path | None:
    """Writes `part` atomically as `part-<time>-<process>-<checksum>.arrow`; returns its path (None if empty)."""
    if not len(part):
        return None
    embeddings = np.stack(part.embeddings)
    frames = np.concatenate(part.frames)
    counts = np.array([len(f) for f in part.frames], np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    table = pa.table(
        {
            "path": pa.array(part.paths, pa.string()),
            "size": pa.array(part.sizes, pa.int64()),
            "mtime_ns": pa.array(part.mtimes_ns, pa.int64()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), embeddings.shape[1]),
            "frame_embeddings": pa.ListArray.from_arrays(
                pa.array(offsets), pa.FixedSizeListArray.from_arrays(pa.array(frames.reshape(-1)), frames.shape[1])
            ),
            "frame_times": pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(part.frame_times))),
        }
    ).replace_schema_metadata({"model_hash": model_hash})
    temporary = parts_dir / f".part-{uuid.uuid4().hex}.tmp"
    write_table(temporary, table)
    _fsync(temporary)
    final = parts_dir / f"part-{time.time_ns():020d}-{process_index:03d}-{file_checksum(temporary)}.arrow"
    os.replace(temporary, final)
    return final


@dataclass
class LoadedPart:
    name: str
    paths: list[str]
    sizes: np.ndarray
    mtimes_ns: np.ndarray
    embeddings: np.ndarray
    frame_offsets: np.ndarray
    frames: np.ndarray
    frame_times: np.ndarray

    def keys(self) -> list[tuple[str, int, int]]:
        return list(zip(self.paths, self.sizes.tolist(), self.mtimes_ns.tolist()))


def read_part(path: Path, model_hash: str, embedding_dim: int | None, projection_dim: int) -> LoadedPart:
    """A part, checked against its checksum, the model and the widths; raises `ValueError` saying what is wrong."""
    checksum = path.stem.rsplit("-", 1)[-1]
    if file_checksum(path) != checksum:
        raise ValueError("contents differ from the checksum in its name (truncated or altered)")
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    if (table.schema.metadata or {}).get(b"model_hash", b"").decode() != model_hash:
        raise ValueError("written with another model")
    embedding = table.column("embedding").combine_chunks()
    frame_lists = table.column("frame_embeddings").combine_chunks()
    times = table.column("frame_times").combine_chunks()
    dim = embedding.type.list_size
    if embedding_dim is not None and dim != embedding_dim:
        raise ValueError(f"embeddings of {dim} values, the index has {embedding_dim}")
    offsets = frame_lists.offsets.to_numpy().astype(np.int64)
    frame_dim = frame_lists.type.value_type.list_size
    if frame_dim != projection_dim:
        raise ValueError(f"frame embeddings of {frame_dim} values, the index has {projection_dim}")
    if not np.array_equal(offsets, times.offsets.to_numpy()):
        raise ValueError("frame embeddings and times disagree")
    embeddings = embedding.flatten().to_numpy().reshape(-1, dim)
    frames = frame_lists.flatten().flatten().to_numpy().reshape(-1, projection_dim)
    for name, values in (("embeddings", embeddings), ("frame embeddings", frames)):
        if not np.isfinite(values).all() or not np.allclose(np.linalg.norm(values, axis=1), 1, atol=1e-3):
            raise ValueError(f"{name} are not finite unit vectors")
    return LoadedPart(
        name=path.name,
        paths=table.column("path").to_pylist(),
        sizes=table.column("size").to_numpy(),
        mtimes_ns=table.column("mtime_ns").to_numpy(),
        embeddings=embeddings,
        frame_offsets=offsets,
        frames=frames,
        frame_times=times.flatten().to_numpy(),
    )


def load_parts(
    index_dir: Path, model_hash: str, embedding_dim: int | None, projection_dim: int
) -> tuple[list[LoadedPart], dict[str, str]]:
    """Every valid part, oldest first, and {quarantined part: reason}: an unusable part is moved to
    `<index_dir>/quarantine/` (never deleted: it may be evidence) and its videos are indexed again. Only regular
    files named as `write_part` names them are read."""
    parts, quarantined = [], {}
    parts_dir = index_dir / PARTS_DIR
    names = sorted(os.listdir(parts_dir)) if parts_dir.is_dir() else []
    for name in filter(_PART_NAME.fullmatch, names):
        path = parts_dir / name
        if not stat.S_ISREG(os.lstat(path).st_mode):
            # Not a file the indexer wrote (a FIFO, a link, a device would block or flood the reader): left alone.
            quarantined[str(path)] = "not a regular file: left in place, not read"
            continue
        try:
            part = read_part(path, model_hash, embedding_dim, projection_dim)
        except Exception as error:  # pyarrow raises its own errors (ArrowInvalid, OSError, ...) for damaged bytes
            (index_dir / QUARANTINE_DIR).mkdir(exist_ok=True)
            os.replace(path, index_dir / QUARANTINE_DIR / path.name)
            quarantined[str(path)] = f"moved to {QUARANTINE_DIR}/: {type(error).__name__}: {error}"
            continue
        embedding_dim = embedding_dim or part.embeddings.shape[1]
        parts.append(part)
    for name in filter(_PART_TEMPORARY.fullmatch, names):  # an interrupted write_part (exact name: `write_part`'s)
        if stat.S_ISREG(os.lstat(parts_dir / name).st_mode):
            (parts_dir / name).unlink(missing_ok=True)
    return parts, quarantined


# ----------------------------------------------------------------------------------------------------------------
# The current generation
# ----------------------------------------------------------------------------------------------------------------


def open_current(index_dir: Path, model_hash: str, rebuild: bool) -> tuple[VideoIndex | None, str | None]:
    """The generation to build on, and a note when it was set aside. Without `rebuild`, a damaged generation or one
    built by another model raises (naming the file and the repair); with `rebuild`, it is verified against its
    checksums and kept only if intact and of this model."""
    if not (index_dir / METADATA_FILE).exists():
        return None, None
    try:
        current = VideoIndex(index_dir, verify=rebuild, load_vectors=False)
    except IndexDamagedError as error:
        if not rebuild:
            raise
        return None, f"set aside the damaged index ({error}); its videos are indexed again"
    if current.metadata["model"]["hash"] != model_hash:
        if not rebuild:
            raise SystemExit(
                f"{index_dir} was built with the model {current.metadata['model']['name']!r} "
                f"(fingerprint {current.metadata['model']['hash'][:12]}), not this one: pass --rebuild to index its "
                "videos again with this model, or choose another --index_dir."
            )
        return None, "the index was built with another model; its videos are indexed again"
    return current, None


def current_keys(current: VideoIndex | None) -> set[tuple[str, int, int]]:
    if current is None:
        return set()
    table = current.table
    return set(table_keys(table))


def table_keys(table: pa.Table):
    """(path, size, mtime_ns) of each row of an index table."""
    return zip(*(table.column(name).to_pylist() for name in ("path", "size", "mtime_ns")))


def file_key(path: Path, root: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns


# ----------------------------------------------------------------------------------------------------------------
# Commit
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class VectorIndexOptions:
    """`index_type`: auto (exact up to `approximate_above` videos, IVF above; where IVF's measured recall stays
    below `TARGET_RECALL`, a PQ scan, then HNSW; `RecallTooLowError` where all three do), exact, ivf, pq or hnsw.
    `nlist`: IVF lists (default about sqrt(videos), a power of two). `nprobe`: IVF lists searched by default.
    `hnsw_m`, `ef_search`: HNSW links per vector and default search breadth; `hnsw_ef_construction`: the breadth of the
    search that links each added vector (the build's cost grows with it; recall is measured whatever it is).
    `embedding_dtype`: auto (float16 when its measured error bound stays under 1e-3, float32 otherwise), float16 or
    float32."""

    index_type: str = "auto"
    approximate_above: int = APPROXIMATE_ABOVE
    nlist: int | None = None
    nprobe: int | None = None
    hnsw_m: int = 32
    ef_search: int = 256
    hnsw_ef_construction: int = 80
    embedding_dtype: str = "auto"


def default_nlist(num_videos: int) -> int:
    """About 4 sqrt(videos) lists, a power of two (FAISS's guideline is 4 to 16 sqrt(n)): lists of a few hundred
    videos, fine enough that the small topics of a collection's long tail get lists of their own."""
    return int(2 ** round(math.log2(max(4 * math.sqrt(num_videos), 16))))


@dataclass(frozen=True)
class IndexSpec:
    """What every generation of an index records about the model and the videos: the model's fingerprint
    (`name`, `hash`, `source`), `logit_scale` (`model.logit_scale.exp()`), the widths of the retrieval embedding
    (`config.retrieval_embedding_dim`) and of the frame embeddings (`config.projection_dim`), and the indexed
    folder (`video_root`, absolute), relative to which the videos' paths are stored."""

    model: dict
    logit_scale: float
    embedding_dim: int
    projection_dim: int
    video_root: Path

    @classmethod
    def of(cls, index: VideoIndex) -> "IndexSpec":
        """The spec an existing index was written with (read from its `index.json`)."""
        metadata = index.metadata
        return cls(
            metadata["model"], metadata["logit_scale"], metadata["embedding_dim"], metadata["projection_dim"],
            Path(metadata["video_root"]),
        )


@dataclass
class GenerationVideos:
    """The videos of a generation, sorted by path. `keys`: (path, size, mtime_ns) of each; `embedding_chunks()`:
    an iterator over float32 blocks of their embeddings, in order (called twice: the float16 error is measured
    before the storage is chosen); `frame_counts[i]` frames of video i come from `frame_chunks()`, an iterator over
    (frames, times) blocks in order. Carried over from the generation they replace: `float16_error`, its measured
    float16 error bound (a new generation never records a lower one), and `previous_vectors`, its FAISS index,
    whose training (IVF centroids, quantiser ranges) is reused when it fits the new one."""

    keys: list[tuple[str, int, int]]
    embedding_chunks: Callable[[], Iterator[np.ndarray]]
    frame_counts: np.ndarray
    frame_chunks: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]
    float16_error: float = 0.0
    previous_vectors: Path | None = None


def commit(
    index_dir: Path, spec: IndexSpec, current: VideoIndex | None, parts: list[LoadedPart], options: VectorIndexOptions
) -> dict:
    """Writes a new generation holding, for every video still on disk unchanged under `spec.video_root`, its latest
    embedding (parts override the current generation, later parts earlier ones); then points `index.json` to it and
    removes the old generation and the merged parts. Returns the new metadata."""
    root, embedding_dim = spec.video_root, spec.embedding_dim
    sources = ([current] if current is not None else []) + parts
    latest: dict[str, tuple[int, int, tuple[str, int, int]]] = {}
    for source_index, source in enumerate(sources):
        keys = table_keys(source.table) if isinstance(source, VideoIndex) else source.keys()
        for row, key in enumerate(keys):
            latest[key[0]] = (source_index, row, key)
    selected = []
    for name in sorted(latest):
        source_index, row, key = latest[name]
        path = root / name
        try:
            if path.is_file() and file_key(path, root) == key:
                selected.append((name, key, source_index, row))
        except OSError:
            pass  # vanished meanwhile: left out like a deleted video

    num_videos = len(selected)
    source_of = np.array([s for _, _, s, _ in selected], np.int64)
    row_of = np.array([r for _, _, _, r in selected], np.int64)

    def embedding_chunks():
        for start in range(0, num_videos, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, num_videos)
            block = np.empty((stop - start, embedding_dim), np.float32)
            for source_index in np.unique(source_of[start:stop]):
                mask = source_of[start:stop] == source_index
                block[mask] = np.asarray(sources[source_index].embeddings[row_of[start:stop][mask]], np.float32)
            yield block

    def frame_ranges(source, row):
        if isinstance(source, VideoIndex):
            return source.frames, source.frame_times, *source.frame_range(row)
        return source.frames, source.frame_times, int(source.frame_offsets[row]), int(source.frame_offsets[row + 1])

    frame_counts = np.zeros(num_videos, np.int32)
    for position, (_, _, source_index, row) in enumerate(selected):
        _, _, begin, end = frame_ranges(sources[source_index], row)
        frame_counts[position] = end - begin

    def frame_chunks():
        for _, _, source_index, row in selected:
            source_frames, source_times, begin, end = frame_ranges(sources[source_index], row)
            yield source_frames[begin:end], source_times[begin:end]

    videos = GenerationVideos(
        [key for _, key, _, _ in selected], embedding_chunks, frame_counts, frame_chunks,
        float16_error=float(current.metadata.get("float16_error_bound", 0.0)) if current else 0.0,
        previous_vectors=current.index_dir / current.metadata["files"]["vectors"]
        if current and current.metadata["files"].get("vectors") else None,
    )
    metadata = write_generation(index_dir, spec, videos, options)
    for part in parts:
        (index_dir / PARTS_DIR / part.name).unlink(missing_ok=True)
    return metadata


def write_generation(index_dir: Path, spec: IndexSpec, videos: GenerationVideos, options: VectorIndexOptions) -> dict:
    """Writes a generation of `videos` and switches `index.json` to it. The files of the generation it replaces are
    removed once `index.json` no longer names them. Returns the new metadata."""
    keys, embedding_chunks, frame_counts, frame_chunks = (
        videos.keys, videos.embedding_chunks, videos.frame_counts, videos.frame_chunks
    )
    embedding_dim, projection_dim = spec.embedding_dim, spec.projection_dim
    num_videos = len(keys)
    float16_error = videos.float16_error
    # float16 storage error bound: for unit queries |q.v - q.float16(v)| <= ||v - float16(v)||.
    for block in embedding_chunks():
        rounding = np.linalg.norm(block - block.astype(np.float16), axis=1)
        float16_error = max(float16_error, float(rounding.max(initial=0)))
    index_type = options.index_type
    if index_type == "auto":
        index_type = "exact" if num_videos <= options.approximate_above else "ivf"
    if index_type != "exact" and num_videos == 0:
        index_type = "exact"
    dtype = options.embedding_dtype
    if dtype == "auto":
        # Exact indexes are small: keep float32, scores equal the model's to float precision.
        dtype = "float16" if index_type != "exact" and float16_error <= FLOAT16_TOLERANCE else "float32"

    generation = f"{time.time_ns():x}{uuid.uuid4().hex[:6]}"
    names = {
        "table": f"videos-{generation}.arrow",
        "embeddings": f"embeddings-{generation}.npy",
        "frames": f"frames-{generation}.npy",
        "frame_times": f"frame_times-{generation}.npy",
        "vectors": None if index_type == "exact" else f"vectors-{generation}.faiss",
    }
    # The ledger names every file before it exists: a kill at any step leaves nothing the next run cannot tell
    # from a file that is not the indexer's. Leftovers of an interrupted commit go first (none while index.json
    # cannot be read: which generation is current is then unknown).
    claim_index_folder(index_dir)
    current_files = current_generation_files(index_dir)
    if current_files is not None or not os.path.lexists(index_dir / METADATA_FILE):
        collect_garbage(index_dir, keep=current_files or set())
    metadata_temporary = index_dir / f".{METADATA_FILE}.{generation}.tmp"
    created = {name for name in names.values() if name}
    write_ledger(
        index_dir,
        (read_ledger(index_dir) or set()) | created | {f".{name}.tmp" for name in created} | {metadata_temporary.name},
    )

    def temporary(key):
        return index_dir / f".{names[key]}.tmp"

    # Embeddings, written chunk by chunk into a memory map: one copy of the vectors at any time.
    embeddings = np.lib.format.open_memmap(temporary("embeddings"), "w+", np.dtype(dtype), (num_videos, embedding_dim))
    start = 0
    for block in embedding_chunks():
        embeddings[start : start + len(block)] = block
        start += len(block)
    embeddings.flush()
    del embeddings

    frame_starts = np.concatenate([[0], np.cumsum(frame_counts, dtype=np.int64)])
    num_frames = int(frame_starts[-1])
    frames = np.lib.format.open_memmap(temporary("frames"), "w+", np.float16, (num_frames, projection_dim))
    frame_times = np.lib.format.open_memmap(temporary("frame_times"), "w+", np.float64, (num_frames,))
    start = 0
    for frame_block, time_block in frame_chunks():
        frames[start : start + len(frame_block)] = frame_block
        frame_times[start : start + len(frame_block)] = time_block
        start += len(frame_block)
    if start != num_frames:
        raise ValueError(f"frame_chunks gave {start} frames, frame_counts {num_frames}")
    frames.flush()
    frame_times.flush()
    del frames, frame_times

    write_table(
        temporary("table"),
        pa.table(
            {
                "path": pa.array([key[0] for key in keys], pa.string()),
                "size": pa.array([key[1] for key in keys], pa.int64()),
                "mtime_ns": pa.array([key[2] for key in keys], pa.int64()),
                "frame_start": pa.array(frame_starts[:-1], pa.int64()),
                "frame_count": pa.array(frame_counts, pa.int32()),
            },
            schema=TABLE_SCHEMA,
        ),
    )
    settings = {"type": index_type}
    if index_type != "exact":
        stored = np.load(temporary("embeddings"), mmap_mode="r")
        try:
            vectors, settings = build_calibrated_index(
                stored, index_type, options, videos.previous_vectors, automatic=options.index_type == "auto"
            )
        except RecallTooLowError:
            del stored
            for key, name in names.items():  # nothing of this generation is committed
                if name:
                    temporary(key).unlink(missing_ok=True)
            raise
        import faiss

        faiss.write_index(vectors, str(temporary("vectors")))
        del vectors, stored

    # Every new file complete and on disk under its final name before index.json points to it.
    checksums = {}
    for key, name in names.items():
        if name:
            _fsync(temporary(key))
            checksums[name] = {"size": temporary(key).stat().st_size, "blake2b": file_checksum(temporary(key))}
            os.replace(temporary(key), index_dir / name)
    metadata = {
        "format": FORMAT_VERSION,
        "model": spec.model,
        "embedding_dim": int(embedding_dim),
        "projection_dim": int(projection_dim),
        "logit_scale": float(spec.logit_scale),
        "num_videos": num_videos,
        "num_frames": num_frames,
        "video_root": str(spec.video_root),
        "embedding_dtype": dtype,
        "float16_error_bound": float16_error,
        "vector_index": settings,
        "files": names,
        "checksums": checksums,
        "generation": generation,
    }
    metadata_temporary.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    _fsync(metadata_temporary)
    os.replace(metadata_temporary, index_dir / METADATA_FILE)
    _fsync_directory(index_dir)

    # Only now is the old generation garbage.
    collect_garbage(index_dir, keep=created)
    return metadata


def build_vector_index(
    embeddings: np.ndarray, index_type: str, options: VectorIndexOptions, previous: Path | None = None
):
    """A FAISS index over `embeddings` (rows, dim; a memory map), trained on a sample and filled chunk by chunk:
    8-bit scalar-quantised vectors (a quarter of float32) under IVF lists or an HNSW graph. The training of
    `previous` (a FAISS file of the same kind and size) is reused: an incremental run does not train again."""
    import faiss

    num_videos, dim = embeddings.shape
    rng = np.random.default_rng(0)
    if index_type == "ivf":
        # FAISS wants ~39 training points per list: the default stays within that on small collections.
        nlist = min(options.nlist or min(default_nlist(num_videos), max(1, num_videos // 39)), num_videos)
        quantizer = faiss.IndexFlatIP(dim)
        vectors = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        vectors.cp.niter = 10
        vectors.cp.spherical = True  # inner-product lists: unit centroids, so that no list wins by its norm
        training_size = min(num_videos, 40 * nlist)
        vectors.cp.max_points_per_centroid = 40
        settings = {"type": "ivf", "nlist": nlist, "nprobe": options.nprobe or min(nlist, max(16, nlist // 128))}
    elif index_type == "pq":
        # Every video's 4-bit product-quantised code (4 dimensions per sub-quantiser: 128 bytes at 1024) is scored
        # with SIMD table lookups: no list to probe and no graph to walk, so small topics are not missed; the
        # calibrated number of candidates is then re-scored exactly.
        m = pq_subquantizers(dim)
        vectors = faiss.IndexPQFastScan(dim, m, 4, faiss.METRIC_INNER_PRODUCT)
        training_size = min(num_videos, 100_000)
        settings = {"type": "pq", "m": m, "candidates": DEFAULT_PQ_CANDIDATES}
    elif index_type == "hnsw":
        vectors = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        vectors.hnsw.efConstruction = options.hnsw_ef_construction
        training_size = min(num_videos, 100_000)
        settings = {
            "type": "hnsw", "m": options.hnsw_m, "ef_construction": options.hnsw_ef_construction,
            "ef_search": options.ef_search,
        }
    else:
        raise ValueError(f"unknown approximate index type {index_type!r}")
    reused = _trained(previous, vectors)
    if reused is not None:
        vectors = reused
        settings["trained"] = "reused"
    else:
        sample = np.sort(rng.choice(num_videos, training_size, replace=False))
        vectors.train(np.ascontiguousarray(embeddings[sample], np.float32))
    for start in range(0, num_videos, _CHUNK_ROWS):
        vectors.add(np.ascontiguousarray(embeddings[start : start + _CHUNK_ROWS], np.float32))
    return vectors, settings


def pq_subquantizers(dim: int) -> int:
    """Sub-quantisers of a PQ scan: about one per 4 dimensions (the largest divisor of `dim` not above dim / 4).
    Measured at 10^6 x 1024 on 20,000 topics with the calibration's queries: one per 8 dimensions (64 bytes a video)
    needed 8,192 candidates for 0.99 (123 ms a query, the re-scoring dominating), one per 4 (128 bytes) 0.989 with
    256 and 0.998 with 1,024, for a scan of ~10 ms."""
    return next(m for m in range(max(1, dim // 4), 0, -1) if dim % m == 0)


# Candidates a PQ scan proposes for exact re-scoring before calibration doubles them (at most `MAX_PQ_CANDIDATES`,
# or a sixteenth of the videos: beyond that the scan is no cheaper than reading the stored embeddings).
DEFAULT_PQ_CANDIDATES = 256
MAX_PQ_CANDIDATES = 8192
CALIBRATION_QUERIES = 100
TARGET_RECALL = 0.99
# Calibration queries resemble text queries rather than stored videos (which sit among their own near-duplicates
# and overstate recall: 0.93-1.0 where text queries got 0.78-0.85, benchmark_search.py): a caption's embedding lies
# in the text cone, not the videos' (CLIP's modality gap), and matches its video only in part (CLIP's matching
# text-video cosines are ~0.3). A query is a stored video minus the collection's mean direction, turned away from it
# by an isotropic perturbation to this cosine.
TEXT_VIDEO_COSINE = 0.35


class RecallTooLowError(RuntimeError):
    """`--index_type auto` found no approximate index reaching `TARGET_RECALL`; the message says what to do."""


def build_calibrated_index(
    embeddings: np.ndarray, index_type: str, options: VectorIndexOptions, previous: Path | None, automatic: bool
):
    """`build_vector_index` then `calibrate`. Chosen by `auto` (`automatic`), an index is never committed below
    `TARGET_RECALL`: an IVF index that stays below it at its widest search is replaced by a PQ scan (which scores
    every video's code, so that the small topics of collections of many small topics, which IVF lists lose, are
    not missed; its build takes seconds), then by HNSW (which links each video to its neighbours), and if both stay
    below too, `RecallTooLowError` says what was measured and what to do. `instead_of` records the IVF measurement
    and `tried` every one below the target. An index type chosen by the user is kept whatever its recall (recorded
    in `index.json`, shown with every query)."""
    vectors, settings = build_vector_index(embeddings, index_type, options, previous)
    settings = calibrate(vectors, embeddings, settings, explicit=options.nprobe if index_type == "ivf" else None)
    if not automatic or settings["measured_recall_at_10"] >= TARGET_RECALL:
        return vectors, settings
    tried = [settings]
    if index_type == "ivf":
        for fallback in ("pq", "hnsw"):
            del vectors
            vectors, settings = build_vector_index(embeddings, fallback, options)
            settings = calibrate(vectors, embeddings, settings)
            if settings["measured_recall_at_10"] >= TARGET_RECALL:
                return vectors, {**settings, "instead_of": tried[0], "tried": tried}
            tried.append(settings)
    knobs = ("nlist", "nprobe", "m", "ef_search", "candidates")
    measured = "; ".join(
        f"{t['type']} ({', '.join(f'{key} {t[key]}' for key in knobs if key in t)}): {t['measured_recall_at_10']:.3f}"
        for t in tried
    )
    raise RecallTooLowError(
        f"--index_type auto found no approximate index that finds {TARGET_RECALL:.0%} of the true top 10 of this "
        f"collection of {len(embeddings)} videos (recall@10 of {CALIBRATION_QUERIES} text-like queries against an "
        f"exact scan: {measured}). Nothing was committed: the previous index still answers and the videos embedded "
        "by this run are kept in parts/, so a rerun does not decode them again. Rerun with --index_type exact (every "
        "query scans all videos: exact results, slower queries), or --index_type hnsw with a larger --hnsw_m, or "
        "accept the measured recall with an explicit --index_type ivf / hnsw (it is then shown with every query)."
    )


def calibrate(vectors, embeddings: np.ndarray, settings: dict, explicit: int | None = None) -> dict:
    """Measures the index's recall@10 instead of assuming it: `CALIBRATION_QUERIES` text-like queries
    (`text_like_queries`) are searched with the default candidates, against an exact scan of the stored
    embeddings. The search breadth (IVF `nprobe` unless given, HNSW `ef_search`) is doubled until recall reaches
    `TARGET_RECALL` or a quarter of the lists / 2048, and a PQ scan's candidates up to `MAX_PQ_CANDIDATES` (or a
    sixteenth of the videos); the result is recorded in `index.json` (`measured_recall_at_10`)."""
    import faiss

    from .video_index import DEFAULT_CANDIDATES, exact_top_k

    num_videos = len(embeddings)
    if num_videos <= 11:
        return {**settings, "measured_recall_at_10": 1.0}
    queries = text_like_queries(embeddings, min(CALIBRATION_QUERIES, num_videos))
    _, truth = exact_top_k(embeddings, queries, 10)
    truth_sets = [set(t.tolist()) for t in truth]
    candidates = min(DEFAULT_CANDIDATES, num_videos)

    def recall() -> float:
        _, found = vectors.search(queries, candidates)
        return float(np.mean([len(t & set(f.tolist())) / max(len(t), 1) for t, f in zip(truth_sets, found)]))

    if settings["type"] == "pq":
        key, limit = "candidates", max(candidates, min(MAX_PQ_CANDIDATES, num_videos // 16))

        def setter(value):
            nonlocal candidates
            candidates = min(value, num_videos)
    elif settings["type"] == "ivf":
        ivf = faiss.extract_index_ivf(vectors)
        key, limit = "nprobe", max(settings["nprobe"], settings["nlist"] // 4)
        setter = lambda value: setattr(ivf, "nprobe", value)  # noqa: E731
    else:
        hnsw = faiss.downcast_index(vectors).hnsw
        key, limit = "ef_search", 2048
        setter = lambda value: setattr(hnsw, "efSearch", max(value, candidates))  # noqa: E731
    value = settings[key]
    setter(value)
    measured = recall()
    while explicit is None and measured < TARGET_RECALL and value * 2 <= limit:
        value *= 2
        setter(value)
        measured = recall()
    return {**settings, key: value, "measured_recall_at_10": round(measured, 4)}


def text_like_queries(embeddings: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
    """`count` unit queries that stand for captions of stored videos (see `TEXT_VIDEO_COSINE`): a random stored
    video, its component along the collection's mean direction removed, perturbed isotropically (orthogonally to
    that direction) so that the query's cosine with it is `TEXT_VIDEO_COSINE`. Deterministic for a collection."""
    rng = np.random.default_rng(seed)
    num_videos, dim = embeddings.shape
    rows = np.sort(rng.choice(num_videos, count, replace=False))
    sample = np.sort(rng.choice(num_videos, min(num_videos, 10_000), replace=False))
    mean = np.asarray(embeddings[sample], np.float64).mean(axis=0)
    mean /= max(np.linalg.norm(mean), 1e-12)
    videos = np.asarray(embeddings[rows], np.float64)
    videos -= (videos @ mean)[:, None] * mean
    videos /= np.maximum(np.linalg.norm(videos, axis=1, keepdims=True), 1e-12)
    noise = rng.standard_normal((count, dim))
    noise -= (noise @ mean)[:, None] * mean  # the query stays out of the videos' cone
    noise -= np.sum(noise * videos, axis=1, keepdims=True) * videos
    noise /= np.maximum(np.linalg.norm(noise, axis=1, keepdims=True), 1e-12)
    queries = TEXT_VIDEO_COSINE * videos + math.sqrt(1 - TEXT_VIDEO_COSINE**2) * noise
    return np.ascontiguousarray(queries, np.float32)


def _trained(previous: Path | None, fresh):
    """`previous` emptied of its vectors, if it is an index of the same structure as `fresh` (type, width, lists)."""
    if previous is None or type(fresh).__name__ == "IndexHNSWSQ":  # an HNSW graph is rebuilt from scratch anyway
        return None
    import faiss

    try:
        old = faiss.read_index(str(previous))
    except Exception:  # damaged or unreadable: train afresh
        return None
    if type(old) is not type(fresh) or old.d != fresh.d or getattr(old, "nlist", None) != getattr(fresh, "nlist", None):
        return None
    old.reset()
    return old


def _fsync(path: Path) -> None:
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)



"""Indexing a folder of videos for text search: `VideoIndexer`, what the `index_videos` command and the demo run.

    indexer = VideoIndexer(model, processor, IndexingOptions(batch_size=8), on_progress=print)
    result = indexer.index("my_videos", "my_index")     # resumable and incremental: run it again when videos change

One run: take the index folder's lock (`IndexLock`, with `with`), plan (the generation to build on, the parts of an
interrupted run, the videos whose key (path, size, mtime) is not stored yet), embed the pending videos (decoded in
`num_workers` DataLoader workers while the model embeds the previous batch, a resume part written every
`save_every` videos), then commit: a new generation of the file index (`index_build.commit`), or the rows of a
Milvus collection (`milvus_store.MilvusIndexWriter`). Under `accelerate launch` each process embeds its share of
the pending videos; the main process holds the lock, plans and commits.
"""

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from clip2video.processing.video_processing_clip2video import stack_videos

from .index_build import (
    PARTS_DIR, TARGET_RECALL, UNREADABLE_FILE, IndexFolderError, IndexLock, IndexSpec, LoadedPart, Part,
    VectorIndexOptions, commit, current_keys, file_key, load_parts, model_reference, open_current,
    write_part,
)
from .milvus_store import MilvusIndexWriter, MilvusOptions, MilvusStoreError
from .video_index import IndexDamagedError, VideoIndex, cached_model_fingerprint, list_videos, retrieval_embedding_dim


# A file still changing after this many reads is reported, not indexed (a later run picks it up).
READ_ATTEMPTS = 3


class VideoFiles(torch.utils.data.Dataset):
    """Decodes one video per item, in a DataLoader worker: `{"name", "key", "inputs"}`, or `{"name", "error"}` for
    a file that cannot be read (one bad file costs only itself). The key (path, size, mtime) is read before decoding
    and checked after, so an embedding is never stored under the key of a file that changed meanwhile."""

    def __init__(self, paths: list[Path], root: Path, processor):
        self.paths, self.root, self.processor = paths, root, processor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int) -> dict:
        path = self.paths[item]
        name = path.relative_to(self.root).as_posix()
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:  # the table stores UTF-8 paths: reported by a printable form of its name
            return {
                "name": printable(name),
                "error": "the file name is not valid UTF-8 (the index stores paths as UTF-8 text); rename it to index it",
            }
        for _ in range(READ_ATTEMPTS):
            try:
                before = file_key(path, self.root)
                inputs = self.processor(videos=[str(path)], return_tensors="pt", return_timestamps=True)
                after = file_key(path, self.root)
            except Exception as error:  # any decoding failure of this file: reported, never the end of the run
                return {"name": name, "error": f"{type(error).__name__}: {error}"}
            if before == after:
                return {"name": name, "key": before, "inputs": {key: inputs[key] for key in inputs}}
        return {"name": name, "error": f"{path} kept changing while it was read; it is indexed on a later run"}


def _one_item(items):
    return items


def printable(name: str) -> str:
    """A path as text that can be printed and written as JSON: bytes that are not UTF-8 as `\\xNN` escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


@torch.no_grad()
def embed_videos(model, videos: dict[str, torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(retrieval embedding `[embedding_dim]`, normalised frame embeddings `[frames, projection_dim]`, frame times
    `[frames]`) of each video of a batch, from one pass of all its frames through the vision tower."""
    output = model.get_video_features(
        pixel_values_videos=videos["pixel_values_videos"].to(model.device, model.dtype),
        video_mask=videos["video_mask"].to(model.device),
    )
    embeddings = output.pooler_output.float().cpu().numpy()
    frames = torch.nn.functional.normalize(output.frame_embeds.float(), dim=-1).cpu().numpy()
    counts = output.video_mask.sum(dim=1).tolist()
    times = videos["video_timestamps"].numpy()
    return [(embeddings[i], frames[i, :count], times[i, :count]) for i, count in enumerate(counts)]


def set_aside_message(name: str, reason: str, then: str) -> str:
    if reason.startswith("moved to"):
        return f"Quarantined the damaged part {name} ({reason}); {then}."
    return f"Skipped the part {name} ({reason}); move it out of the parts folder."


def write_json(path: Path, value) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, path)


@dataclass
class IndexingOptions:
    """How `VideoIndexer` runs.

    Args:
        batch_size: videos per forward pass.
        save_every: videos per resume part written to `<index_dir>/parts/`.
        num_workers: decoding worker processes per indexing process (0 decodes in the process itself).
        rebuild: repair: verify the current generation against its checksums and keep it only if intact and of
            this model (a damaged one, or another model's, is set aside and its videos indexed again); with Milvus,
            drop a collection of another model.
        wait_for_lock: wait for another indexer of the same folder instead of stopping.
        keep_unchanged: keep the current generation when no video was added, changed or removed and no part waits
            (an unchanged folder is opened, not rewritten: the demo's start-up). Off, every run commits, so that a
            run with other `vector_index` options rebuilds the vector index.
        vector_index: the file index's vector index and storage (`index_build.VectorIndexOptions`).
        milvus: store the index in this Milvus collection instead of files; `index_dir` then holds only the parts
            and the lock (a staging folder).
        verbose: print what the run does and show a progress bar (the command line's output).
    """

    batch_size: int = 8
    save_every: int = 64
    num_workers: int = 0
    rebuild: bool = False
    wait_for_lock: bool = False
    keep_unchanged: bool = False
    vector_index: VectorIndexOptions = field(default_factory=VectorIndexOptions)
    milvus: MilvusOptions | None = None
    verbose: bool = False

    def __post_init__(self):
        for name, minimum in (("batch_size", 1), ("save_every", 1), ("num_workers", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}.")


@dataclass
class IndexingPlan:
    """What a run starts from (the main process's view): `current`, the generation to build on (None: none, or
    set aside, `note` says why); `parts`, the valid resume parts of earlier runs (`quarantined`: {part: reason} of
    the others); `videos`, every video under the folder; `pending`, those whose key is stored nowhere yet."""

    current: VideoIndex | None
    parts: list[LoadedPart]
    quarantined: dict[str, str]
    note: str | None
    videos: list[Path]
    pending: list[Path]

    @property
    def unchanged(self) -> bool:
        """Nothing to embed or merge, and no video of the current generation gone."""
        return (
            self.current is not None and not self.parts and not self.pending and len(self.current) == len(self.videos)
        )


@dataclass
class IndexingResult:
    """What a run did. `metadata`: the index's (`index.json`'s, or the Milvus store's summary); `committed`: False
    when `keep_unchanged` kept the current generation; `listed`: videos under the folder; `pending`: videos this
    run had to index (all processes); `embedded`: videos embedded by this process; `unreadable`: {video: reason};
    `quarantined`: {part: reason}; `note`: why the previous generation was set aside (None if it was not)."""

    metadata: dict | None
    committed: bool
    listed: int
    pending: int
    embedded: int
    unreadable: dict[str, str]
    quarantined: dict[str, str]
    note: str | None
    seconds: float


class _OneProcess:
    """The part of `accelerate.Accelerator` the indexer uses, for a run in this process alone."""

    process_index, num_processes, is_main_process, is_local_main_process = 0, 1, True, True

    def wait_for_everyone(self) -> None:
        pass


class VideoIndexer:
    """Indexes folders of videos with one model: `index(videos, index_dir)`, as often as the folders change.

    Args:
        model: a CLIP2Video model in eval mode (its fingerprint, `logit_scale` and widths are recorded).
        processor: its processor (decodes and samples the videos).
        options: `IndexingOptions`.
        on_progress: called as `on_progress(done, total)` with the videos this process has embedded and has to
            embed: once when the run knows `total`, then after each batch.
        accelerator: an `accelerate.Accelerator` to share the videos among its processes (`accelerate launch`);
            None indexes in this process alone.
    """

    def __init__(
        self,
        model,
        processor,
        options: IndexingOptions | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        accelerator=None,
    ):
        self.model, self.processor = model, processor
        self.options = options or IndexingOptions()
        self.on_progress = on_progress
        self.processes = accelerator or _OneProcess()

    def spec(self, videos: Path) -> IndexSpec:
        """What the index of the folder `videos` records about this model (a local checkpoint as its absolute
        folder, so that it is found from anywhere and never taken for a Hub id)."""
        config = self.model.config
        return IndexSpec(
            model={**cached_model_fingerprint(self.model), **model_reference(str(self.model.name_or_path))},
            logit_scale=self.model.logit_scale.exp().item(),
            embedding_dim=retrieval_embedding_dim(config),
            projection_dim=config.projection_dim,
            video_root=Path(videos).resolve(),
        )

    def index(self, videos: str | Path, index_dir: str | Path) -> IndexingResult:
        """Brings the index in `index_dir` up to date with the folder `videos` (searched recursively).

        Raises:
            SystemExit: the folder cannot be used (`IndexFolderError`'s message), another indexer holds it, or the
                index is damaged or another model's (without `rebuild`); every process raises the same.
            RecallTooLowError: `vector_index.index_type` "auto" found no index reaching the target recall (nothing
                committed; the embedded videos stay in parts/).
            MilvusStoreError: Milvus refused a write.
        """
        started = time.perf_counter()
        spec, index_dir = self.spec(videos), Path(index_dir)
        root, processes = spec.video_root, self.processes
        parts_dir = index_dir / PARTS_DIR
        with self._locked(index_dir, root):
            plan, store = None, None
            if processes.is_main_process:
                try:
                    parts_dir.mkdir(parents=True, exist_ok=True)
                    if self.options.milvus is not None:  # the staging folder holds parts only; the rest is in Milvus
                        store = MilvusIndexWriter(
                            self.options.milvus, spec, self.processor.video_processor.num_frames,
                            self.options.vector_index, self.options.rebuild,
                        )
                    plan = self.plan(index_dir, spec, store)
                except (IndexDamagedError, SystemExit, MilvusStoreError) as error:
                    shared = {"error": str(error)}
                else:
                    shared = {"pending": [str(p) for p in plan.pending], "count": len(plan.videos)}
            else:
                shared = None
            shared = self._broadcast(shared)
            if "error" in shared:
                raise SystemExit(shared["error"])
            if plan is not None:
                for name, reason in plan.quarantined.items():
                    self._say(set_aside_message(name, reason, "its videos are indexed again"))
                if plan.note:
                    self._say(f"Note: {plan.note}.")
            pending = [Path(p) for p in shared["pending"]]
            share = pending[processes.process_index :: processes.num_processes]
            self._say(
                f"{shared['count']} videos under {printable(str(root))}: {shared['count'] - len(pending)} already "
                f"indexed, {len(pending)} to index on {processes.num_processes} process(es)."
            )
            if plan is not None and self.options.keep_unchanged and plan.unchanged:
                self._progress(0, 0)
                return IndexingResult(
                    plan.current.metadata, False, len(plan.videos), 0, 0, {}, plan.quarantined, plan.note,
                    time.perf_counter() - started,
                )
            unreadable, embedded, seconds = self._embed(share, root, parts_dir, spec.model["hash"])
            write_json(parts_dir / f"unreadable-{processes.process_index:03d}.json", unreadable)
            if self.options.verbose:
                print(
                    f"process {processes.process_index}: embedded {embedded} videos in {seconds:.1f} s "
                    f"({embedded / max(seconds, 1e-9):.2f} videos/s, decoding included)"
                )
            processes.wait_for_everyone()
            if not processes.is_main_process:
                return IndexingResult(
                    None, False, shared["count"], len(pending), embedded, unreadable, {}, None, seconds
                )
            unreadable = {}
            for report in sorted(parts_dir.glob("unreadable-[0-9][0-9][0-9]*.json")):
                unreadable.update(json.loads(report.read_text()))
                report.unlink()
            # Parts of every process, read again: the other processes wrote theirs meanwhile.
            new_parts, quarantined = load_parts(index_dir, spec.model["hash"], spec.embedding_dim, spec.projection_dim)
            for name, reason in quarantined.items():
                self._say(set_aside_message(name, reason, "its videos are indexed on the next run"))
            if store is not None:
                metadata = store.commit(parts_dir, new_parts, root)
            else:
                metadata = commit(index_dir, spec, plan.current, new_parts, self.options.vector_index)
            write_json(index_dir / UNREADABLE_FILE, unreadable)
        result = IndexingResult(
            metadata, True, len(plan.videos), len(pending), embedded, unreadable, {**plan.quarantined, **quarantined},
            plan.note, time.perf_counter() - started,
        )
        self._report(result, store.name if store else index_dir, index_dir)
        return result

    def plan(self, index_dir: Path, spec: IndexSpec, store: MilvusIndexWriter | None = None) -> IndexingPlan:
        """Main process, holding the lock: the generation to build on, the valid parts (others quarantined) and
        the videos whose current key is stored nowhere (neither in the generation, a part, nor `store`)."""
        current, note = open_current(index_dir, spec.model["hash"], self.options.rebuild)
        parts, quarantined = load_parts(index_dir, spec.model["hash"], spec.embedding_dim, spec.projection_dim)
        done = current_keys(current)
        for part in parts:
            done.update(part.keys())
        if store is not None:
            done.update(store.stored_keys().values())
        root = spec.video_root
        videos = list_videos(root)
        pending = []
        for path in videos:
            try:
                if file_key(path, root) not in done:
                    pending.append(path)
            except OSError:
                pass  # vanished since it was listed
        return IndexingPlan(current, parts, quarantined, note, videos, pending)

    # -- the steps ----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, index_dir: Path, root: Path):
        """The main process holds the index folder's lock for the block (the folder checked before anything is
        created in it, and again once locked); every process raises the main process's refusal."""
        with contextlib.ExitStack() as stack:
            refusal = None
            if self.processes.is_main_process:
                try:
                    stack.enter_context(IndexLock(index_dir, wait=self.options.wait_for_lock, videos=root))
                except (SystemExit, IndexFolderError) as error:
                    refusal = str(error)
            refusal = self._broadcast(refusal)
            if refusal:
                raise SystemExit(refusal)
            yield

    def _embed(self, paths: list[Path], root: Path, parts_dir: Path, model_hash: str) -> tuple[dict, int, float]:
        """Embeds `paths`, writing a part every `save_every` videos. Returns ({unreadable video: reason}, videos
        embedded, seconds)."""
        options = self.options
        dataset = VideoFiles(paths, root, self.processor)
        num_workers = options.num_workers
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=None,
            collate_fn=_one_item,
            num_workers=num_workers,
            # Enough decoded videos queued for the next batch while the model embeds this one.
            prefetch_factor=max(2, -(-options.batch_size // num_workers)) if num_workers else None,
            persistent_workers=False,
        )
        unreadable, part, batch = {}, Part(), []
        embedded = 0
        self._progress(0, len(dataset))

        def run_batch():
            nonlocal embedded
            if batch:
                embedded_batch = embed_videos(self.model, stack_videos([item["inputs"] for item in batch]))
                for item, (embedding, frames, times) in zip(batch, embedded_batch):
                    part.add(item["key"], embedding, frames, times)
                embedded += len(batch)
                batch.clear()
                self._progress(embedded, len(dataset))

        started = time.perf_counter()
        # An iterator, not the loader: `tqdm.auto`'s asyncio mixin calls `iter()` on an iterable when the bar is made
        # (even disabled), which started a first set of workers decoding videos that the loop's own set then decoded
        # again.
        show = options.verbose and self.processes.is_local_main_process
        progress = tqdm(iter(loader), total=len(dataset), desc="Indexing videos", unit="video", disable=not show)
        for item in progress:
            if "error" in item:
                unreadable[item["name"]] = item["error"]
                continue
            batch.append(item)
            if len(batch) == options.batch_size:
                run_batch()
            if len(part) >= options.save_every:
                write_part(parts_dir, part, model_hash, self.processes.process_index)
                part = Part()
        run_batch()
        write_part(parts_dir, part, model_hash, self.processes.process_index)
        return unreadable, embedded, time.perf_counter() - started

    def _broadcast(self, value):
        """The main process's `value` in every process."""
        if self.processes.num_processes == 1:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value])[0]

    def _progress(self, done: int, total: int) -> None:
        if self.on_progress is not None:
            self.on_progress(done, total)

    def _say(self, message: str) -> None:
        if self.options.verbose and self.processes.is_main_process:
            print(message)

    def _report(self, result: IndexingResult, where, index_dir: Path) -> None:
        metadata, settings = result.metadata, result.metadata["vector_index"]
        if "instead_of" in settings:
            self._say(
                f"IVF found {settings['instead_of']['measured_recall_at_10']:.1%} of the true top 10 of text-like "
                f"queries (measured at build), below {TARGET_RECALL:.0%}: --index_type auto built "
                f"{settings['type'].upper()} instead "
                f"({settings['measured_recall_at_10']:.1%})."
            )
        if settings.get("measured_recall_at_10", 1.0) < TARGET_RECALL:
            self._say(
                f"Warning: the {settings['type']} index finds {settings['measured_recall_at_10']:.1%} of the true "
                "top 10 of text-like queries (measured at build). Many small topics spread over IVF lists do this; "
                "--index_type pq or hnsw, or query_videos --exact, or more --candidates / --nprobe recover the rest."
            )
        self._say(
            f"Indexed {metadata['num_videos']} videos into {where} ({settings['type']} search, "
            f"{metadata['embedding_dtype']} embeddings) in {result.seconds:.1f} s."
        )
        if result.unreadable:
            self._say(f"Skipped {len(result.unreadable)} unreadable file(s), listed in {index_dir / UNREADABLE_FILE}:")
            for name, reason in sorted(result.unreadable.items()):
                self._say(f"  {name}: {reason}")

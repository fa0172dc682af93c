"""Index a folder of videos for text search with a CLIP2Video checkpoint.

    python -m clip2video.apps.search.index_videos --model outputs/clip2video-synthetic --videos my_videos --index_dir my_index

    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \\
        -m clip2video.apps.search.index_videos --model outputs/clip2video-synthetic --videos my_videos --index_dir my_index

Every video under `--videos` (recursively) is decoded as the checkpoint's processor samples it, in `--num_workers`
worker processes while the model embeds the previous batch; `--batch_size` videos go through the vision tower
together. Each process writes what it finished every `--save_every` videos to `<index_dir>/parts/`; a second run
skips the videos already indexed (same path, size and modification time, read before decoding and checked again
after), so an interrupted run resumes where it stopped and a folder that grew is indexed incrementally. Files that
cannot be read are skipped, listed in `<index_dir>/unreadable.json` with the reason, and retried on the next run.

At the end the main process writes a new generation of the index (table, memory-mapped embeddings and frames, the
vector index) under temporary names and switches `index.json` to it atomically: a crash never leaves a broken index.
`--index_type auto` searches exactly up to `--approximate_above` videos and builds an IVF index (8-bit scalar
quantised, re-ranked exactly) above. One indexer at a time per index folder: a second one exits with a message
(or waits, with `--wait_for_lock`). The index folder must be new, empty, or an index: a folder that is or lies in
`--videos` (or holds it), or that holds files the indexer did not write, is refused before anything is written; the
indexer removes only files whose exact names it recorded (docs/search.md, "The index never breaks"). `--rebuild`
repairs a damaged index: it keeps what verifies and re-indexes the rest.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm
from transformers import AutoModel, AutoProcessor

from clip2video.processing.video_processing_clip2video import stack_videos
from clip2video.training.distributed import cores_per_process, set_cpu_threads

from .index_build import (
    PARTS_DIR, TARGET_RECALL, UNREADABLE_FILE, IndexFolderError, IndexLock, Part, RecallTooLowError, VectorIndexOptions,
    check_index_folder, commit, current_keys, file_key, load_parts, model_reference, open_current, write_part,
)
from .milvus_store import MILVUS_INDEX_TYPES, MilvusIndexWriter, MilvusStoreError, add_store_arguments
from .video_index import APPROXIMATE_ABOVE, INDEX_TYPES, IndexDamagedError, list_videos, model_fingerprint


# A file still changing after this many reads is reported, not indexed (a later run picks it up).
READ_ATTEMPTS = 3


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="CLIP2Video checkpoint folder or Hub id (with its processor)")
    parser.add_argument("--videos", required=True, help="folder of videos, searched recursively")
    parser.add_argument("--index_dir", required=True, help="where to write the index (resumed if it exists)")
    parser.add_argument("--batch_size", type=int, default=8, help="videos per forward pass")
    parser.add_argument("--save_every", type=int, default=64, help="videos per part written to disk (resume points)")
    parser.add_argument(
        "--num_workers", type=int, default=None,
        help="decoding worker processes per indexing process (default: half the CPUs of a process, 1 to 8; 0 decodes "
        "in the indexing process itself)",
    )
    parser.add_argument(
        "--cpu_threads", type=int, default=None,
        help="torch threads per process on CPU (default: the CPUs available divided by the local processes)",
    )
    parser.add_argument("--index_type", choices=INDEX_TYPES, default="auto", help="vector index (default: auto)")
    parser.add_argument(
        "--approximate_above", type=int, default=APPROXIMATE_ABOVE,
        help=f"with --index_type auto, videos above which the index is approximate (default {APPROXIMATE_ABOVE})",
    )
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default: about sqrt(videos))")
    parser.add_argument(
        "--nprobe", type=int, default=None,
        help="IVF lists searched by default (default: max(16, nlist/128), doubled at build until the recall@10 "
        "measured on stored videos is 0.99)",
    )
    parser.add_argument("--hnsw_m", type=int, default=32, help="HNSW links per vector")
    parser.add_argument("--ef_search", type=int, default=256, help="HNSW default search breadth")
    parser.add_argument(
        "--embedding_dtype", choices=("auto", "float16", "float32"), default="auto",
        help="stored embeddings (auto: float16 for approximate indexes when its measured error bound is < 1e-3)",
    )
    parser.add_argument("--rebuild", action="store_true", help="repair: verify the index, keep what is intact")
    parser.add_argument("--wait_for_lock", action="store_true", help="wait for another indexer of --index_dir")
    add_store_arguments(parser)
    parser.add_argument(
        "--milvus_index", choices=MILVUS_INDEX_TYPES, default="auto",
        help="Milvus index of the embeddings (auto: FLAT for a Milvus Lite file, HNSW for a server)",
    )
    args = parser.parse_args(argv)
    for name in ("batch_size", "save_every", "approximate_above", "hnsw_m", "ef_search"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1.")
    for name in ("nlist", "nprobe", "cpu_threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1.")
    if args.num_workers is not None and args.num_workers < 0:
        parser.error("--num_workers must be at least 0.")
    return args


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


def index_share(model, dataset: VideoFiles, args, model_hash: str, parts_dir: Path, process_index: int, show_progress):
    """Embeds this process's share of the pending videos, writing a part every `save_every` videos. Returns
    ({unreadable video: reason}, videos embedded, seconds)."""
    num_workers = args.num_workers
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        collate_fn=_one_item,
        num_workers=num_workers,
        # Enough decoded videos queued for the next batch while the model embeds this one.
        prefetch_factor=max(2, -(-args.batch_size // num_workers)) if num_workers else None,
        persistent_workers=False,
    )
    unreadable, part, batch = {}, Part(), []
    embedded = 0

    def run_batch():
        nonlocal embedded
        if batch:
            embedded_batch = embed_videos(model, stack_videos([item["inputs"] for item in batch]))
            for item, (embedding, frames, times) in zip(batch, embedded_batch):
                part.add(item["key"], embedding, frames, times)
            embedded += len(batch)
            batch.clear()

    started = time.perf_counter()
    # An iterator, not the loader: `tqdm.auto`'s asyncio mixin calls `iter()` on an iterable when the bar is made (even
    # disabled), which started a first set of workers decoding videos that the loop's own set then decoded again.
    progress = tqdm(iter(loader), total=len(dataset), desc="Indexing videos", unit="video", disable=not show_progress)
    for item in progress:
        if "error" in item:
            unreadable[item["name"]] = item["error"]
            continue
        batch.append(item)
        if len(batch) == args.batch_size:
            run_batch()
        if len(part) >= args.save_every:
            write_part(parts_dir, part, model_hash, process_index)
            part = Part()
    run_batch()
    write_part(parts_dir, part, model_hash, process_index)
    return unreadable, embedded, time.perf_counter() - started


def prepare(index_dir: Path, root: Path, model_hash: str, embedding_dim: int, projection_dim: int, rebuild: bool):
    """Main process: the generation to build on, the valid parts (others quarantined) and the videos to index."""
    current, note = open_current(index_dir, model_hash, rebuild)
    parts, quarantined = load_parts(index_dir, model_hash, embedding_dim, projection_dim)
    done = current_keys(current)
    for part in parts:
        done.update(zip(part.paths, part.sizes.tolist(), part.mtimes_ns.tolist()))
    videos = list_videos(root)
    pending = []
    for path in videos:
        try:
            if file_key(path, root) not in done:
                pending.append(path)
        except OSError:
            pass  # vanished since it was listed
    return current, parts, quarantined, note, videos, pending


def set_aside_message(name: str, reason: str, then: str) -> str:
    if reason.startswith("moved to"):
        return f"Quarantined the damaged part {name} ({reason}); {then}."
    return f"Skipped the part {name} ({reason}); move it out of the parts folder."


def write_json(path: Path, value) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def main(argv=None):
    args = parse_args(argv)
    root = Path(args.videos).resolve()
    if not root.is_dir():
        raise SystemExit(f"--videos {args.videos} is not a folder.")
    index_dir = Path(args.index_dir)
    parts_dir = index_dir / PARTS_DIR
    model_record = model_reference(args.model)
    if model_record["source"] == "unknown":
        raise SystemExit(f"--model {args.model} is neither a folder nor a Hugging Face Hub repository id.")
    try:  # before anything starts (every process reads the same folders); again under the lock below
        check_index_folder(index_dir, root)
    except IndexFolderError as error:
        raise SystemExit(str(error)) from None
    # Without a GPU (or other accelerator) the processes must be CPU ones to join a gloo group under
    # `accelerate launch --multi_gpu`; otherwise each would index everything on its own.
    accelerator = Accelerator(cpu=not torch.accelerator.is_available())
    set_cpu_threads(accelerator, args.cpu_threads)
    if args.num_workers is None:
        args.num_workers = max(1, min(8, cores_per_process(accelerator) // 2))

    lock, refusal = None, None
    if accelerator.is_main_process:
        try:
            # Checked before anything is created in it, and again once locked (`IndexLock` with `videos`).
            lock = IndexLock(index_dir, wait=args.wait_for_lock, videos=root).__enter__()
        except (SystemExit, IndexFolderError) as error:
            refusal = str(error)
    try:
        [refusal] = broadcast_object_list([refusal])
        if refusal:
            raise SystemExit(refusal)
        started = time.perf_counter()
        model = AutoModel.from_pretrained(model_record["name"], trust_remote_code=True).eval().to(accelerator.device)
        processor = AutoProcessor.from_pretrained(model_record["name"], trust_remote_code=True)
        # A local folder as its absolute path: queried from anywhere, never taken for a Hub id.
        fingerprint = {**model_fingerprint(model), **model_record}
        projection_dim = model.config.projection_dim
        embedding_dim = projection_dim * (2 if model.config.use_temporal_alignment_block else 1)

        plan, store = None, None
        if accelerator.is_main_process:
            parts_dir.mkdir(parents=True, exist_ok=True)
            try:
                current, parts, quarantined, note, videos, pending = prepare(
                    index_dir, root, fingerprint["hash"], embedding_dim, projection_dim, args.rebuild
                )
                if args.store == "milvus":  # the staging folder holds parts only; the rest is in Milvus
                    store = MilvusIndexWriter(
                        args.milvus_uri, args.milvus_collection, fingerprint, model.logit_scale.exp().item(),
                        embedding_dim, projection_dim, processor.video_processor.num_frames, root, args.milvus_index,
                        args.hnsw_m, args.ef_search, args.nlist, args.nprobe, args.rebuild,
                    )
                    pending = store.pending(pending, root)
                plan = {"pending": [str(p) for p in pending], "count": len(videos)}
            except (IndexDamagedError, SystemExit, MilvusStoreError) as error:
                plan = {"error": str(error)}
        [plan] = broadcast_object_list([plan])
        if "error" in plan:
            raise SystemExit(plan["error"])
        if accelerator.is_main_process:
            for name, reason in quarantined.items():
                print(set_aside_message(name, reason, "its videos are indexed again"))
            if note:
                print(f"Note: {note}.")
        pending = [Path(p) for p in plan["pending"]]
        share = pending[accelerator.process_index :: accelerator.num_processes]
        accelerator.print(
            f"{plan['count']} videos under {printable(str(root))}: {plan['count'] - len(pending)} already indexed, {len(pending)} to "
            f"index on {accelerator.num_processes} process(es)."
        )
        unreadable, embedded, seconds = index_share(
            model, VideoFiles(share, root, processor), args, fingerprint["hash"], parts_dir, accelerator.process_index,
            accelerator.is_local_main_process,
        )
        write_json(parts_dir / f"unreadable-{accelerator.process_index:03d}.json", unreadable)
        print(
            f"process {accelerator.process_index}: embedded {embedded} videos in {seconds:.1f} s "
            f"({embedded / max(seconds, 1e-9):.2f} videos/s, decoding included)"
        )
        accelerator.wait_for_everyone()

        if accelerator.is_main_process:
            unreadable = {}
            for report in sorted(parts_dir.glob("unreadable-[0-9][0-9][0-9]*.json")):
                unreadable.update(json.loads(report.read_text()))
                report.unlink()
            # Parts of every process, read again: the other processes wrote theirs meanwhile.
            new_parts, more_quarantined = load_parts(index_dir, fingerprint["hash"], embedding_dim, projection_dim)
            for name, reason in more_quarantined.items():
                print(set_aside_message(name, reason, "its videos are indexed on the next run"))
            options = VectorIndexOptions(
                index_type=args.index_type, approximate_above=args.approximate_above, nlist=args.nlist,
                nprobe=args.nprobe, hnsw_m=args.hnsw_m, ef_search=args.ef_search, embedding_dtype=args.embedding_dtype,
            )
            try:
                if args.store == "milvus":
                    metadata = store.commit(parts_dir, new_parts, root)
                else:
                    metadata = commit(
                        index_dir, root, current, new_parts, fingerprint, model.logit_scale.exp().item(),
                        embedding_dim, projection_dim, options,
                    )
            except (RecallTooLowError, MilvusStoreError) as error:
                raise SystemExit(str(error)) from None
            write_json(index_dir / UNREADABLE_FILE, unreadable)
            settings = metadata["vector_index"]
            if "instead_of" in settings:
                print(
                    f"IVF found {settings['instead_of']['measured_recall_at_10']:.1%} of the true top 10 of stored "
                    f"videos (measured at build), below {TARGET_RECALL:.0%}: --index_type auto built HNSW instead "
                    f"({settings['measured_recall_at_10']:.1%})."
                )
            if settings.get("measured_recall_at_10", 1.0) < TARGET_RECALL:
                print(
                    f"Warning: the {settings['type']} index finds {settings['measured_recall_at_10']:.1%} of the true "
                    "top 10 of stored videos (measured at build). Many small topics spread over IVF lists do this; "
                    "--index_type hnsw, or query_videos --exact, or more --candidates / --nprobe recover the rest."
                )
            print(
                f"Indexed {metadata['num_videos']} videos into {store.name if store else index_dir} "
                f"({metadata['vector_index']['type']} search, {metadata['embedding_dtype']} embeddings) in {time.perf_counter() - started:.1f} s."
            )
            if unreadable:
                print(f"Skipped {len(unreadable)} unreadable file(s), listed in {index_dir / UNREADABLE_FILE}:")
                for name, reason in sorted(unreadable.items()):
                    print(f"  {name}: {reason}")
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)
    accelerator.end_training()


if __name__ == "__main__":
    main()

"""Index a folder of videos for text search with a CLIP2Video checkpoint.

    python -m clip2video.apps.search.index_videos --model outputs/clip2video-synthetic --videos my_videos --index_dir my_index

    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \\
        -m clip2video.apps.search.index_videos --model outputs/clip2video-synthetic --videos my_videos --index_dir my_index

Every video under `--videos` (recursively) is decoded as the checkpoint's processor samples it and embedded by the
model. Each process handles its share of the videos and writes what it finished every `--save_every` videos to
`<index_dir>/parts/`; a second run skips the videos already there (same path, size and modification time), so an
interrupted run resumes where it stopped, and a folder that grew is indexed incrementally. Files that cannot be read
are skipped, listed in `<index_dir>/unreadable.json` with the reason, and retried on the next run. At the end the main
process gathers the parts into a `datasets` table (`<index_dir>/videos`), builds the vector index
(`<index_dir>/embedding.faiss` when `faiss` is installed) and writes `<index_dir>/index.json`.
"""

import argparse
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import AutoModel, AutoProcessor

from .video_index import (
    EMBEDDING_COLUMN, FAISS_FILE, FEATURES, METADATA_FILE, TABLE_DIR, faiss_available, list_videos,
)


PARTS_DIR = "parts"
UNREADABLE_FILE = "unreadable.json"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="CLIP2Video checkpoint folder or Hub id (with its processor)")
    parser.add_argument("--videos", required=True, help="folder of videos, searched recursively")
    parser.add_argument("--index_dir", required=True, help="where to write the index (resumed if it exists)")
    parser.add_argument("--batch_size", type=int, default=8, help="videos per forward pass")
    parser.add_argument("--save_every", type=int, default=64, help="videos per part written to disk (resume points)")
    parser.add_argument(
        "--cpu_threads", type=int, default=None,
        help="torch threads per process on CPU (default: the CPUs available divided by the local processes)",
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.save_every < 1:
        parser.error("--batch_size and --save_every must be at least 1.")
    return args


def file_key(path: Path, root: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns


def finished_keys(parts_dir: Path) -> set[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every video in the parts written so far."""
    files = sorted(parts_dir.glob("*.parquet"))
    if not files:
        return set()
    table = datasets.Dataset.from_parquet([str(f) for f in files], features=FEATURES, keep_in_memory=True)
    return set(zip(table["path"], table["size"], table["mtime_ns"]))


def stack_videos(decoded: list) -> dict[str, torch.Tensor]:
    """Videos processed one by one, as one batch: the time axis padded to the longest (zeros, mask 0, NaN times)."""
    num_frames = max(item["video_mask"].shape[1] for item in decoded)

    def pad(tensor, value):
        missing = num_frames - tensor.shape[1]
        if missing == 0:
            return tensor
        padding = tensor.new_full((tensor.shape[0], missing, *tensor.shape[2:]), value)
        return torch.cat([tensor, padding], dim=1)

    return {
        "pixel_values_videos": torch.cat([pad(item["pixel_values_videos"], 0) for item in decoded]),
        "video_mask": torch.cat([pad(item["video_mask"], 0) for item in decoded]),
        "video_timestamps": torch.cat([pad(item["video_timestamps"], float("nan")) for item in decoded]),
    }


@torch.no_grad()
def embed_videos(model, placeholder_text: dict, videos: dict[str, torch.Tensor]) -> dict[str, list]:
    """Retrieval embeddings, normalised frame embeddings and frame times of a batch of processed videos."""
    # `forward` returns both the retrieval embeddings and the frame embeddings from one pass through the vision
    # tower; the placeholder caption costs one short pass through the text tower.
    output = model(
        input_ids=placeholder_text["input_ids"].to(model.device),
        attention_mask=placeholder_text["attention_mask"].to(model.device),
        pixel_values_videos=videos["pixel_values_videos"].to(model.device, model.dtype),
        video_mask=videos["video_mask"].to(model.device),
    )
    frame_embeddings = torch.nn.functional.normalize(output.frame_embeds.float(), dim=-1).cpu()
    counts = videos["video_mask"].sum(dim=1).tolist()
    return {
        "embedding": output.video_embeds.float().cpu().tolist(),
        "frame_embeddings": [frame_embeddings[i, :count].tolist() for i, count in enumerate(counts)],
        "frame_times": [videos["video_timestamps"][i, :count].tolist() for i, count in enumerate(counts)],
    }


def index_share(model, processor, pending, root: Path, parts_dir: Path, args, show_progress: bool, process_index: int):
    """Embeds this process's share of the pending videos; returns the unreadable ones as {path: reason}."""
    placeholder_text = processor(text=[""], return_tensors="pt")
    unreadable = {}
    records = {name: [] for name in FEATURES}
    batch_paths, batch_videos = [], []

    def run_batch():
        if batch_paths:
            embedded = embed_videos(model, placeholder_text, stack_videos(batch_videos))
            for path in batch_paths:
                for key, value in zip(("path", "size", "mtime_ns"), file_key(path, root)):
                    records[key].append(value)
            for key, values in embedded.items():
                records[key].extend(values)
        batch_paths.clear()
        batch_videos.clear()

    def save_part():
        if records["path"]:
            part = parts_dir / f"part-{process_index:03d}-{uuid.uuid4().hex[:12]}.parquet"
            temporary = part.with_suffix(".tmp")
            datasets.Dataset.from_dict(records, features=FEATURES).to_parquet(str(temporary))
            os.replace(temporary, part)
            for values in records.values():
                values.clear()

    for count, path in enumerate(tqdm(pending, desc="Indexing videos", unit="video", disable=not show_progress), 1):
        try:
            # One video at a time through the processor: an unreadable file costs only itself.
            batch_videos.append(
                processor.video_processor([str(path)], return_tensors="pt", return_timestamps=True)
            )
            batch_paths.append(path)
        except (FileNotFoundError, ValueError) as error:
            unreadable[path.relative_to(root).as_posix()] = str(error)
        if len(batch_paths) == args.batch_size:
            run_batch()
        if count % args.save_every == 0:
            run_batch()
            save_part()
    run_batch()
    save_part()
    return unreadable


def gather_table(parts_dir: Path, root: Path) -> datasets.Dataset:
    """All parts as one table sorted by path, keeping for each video present on disk its latest embedding."""
    files = sorted(parts_dir.glob("*.parquet"))
    if not files:
        return datasets.Dataset.from_dict({name: [] for name in FEATURES}, features=FEATURES)
    table = datasets.Dataset.from_parquet([str(f) for f in files], features=FEATURES)
    current = {}
    for row, (name, size, mtime_ns) in enumerate(zip(table["path"], table["size"], table["mtime_ns"])):
        path = root / name
        if path.is_file() and file_key(path, root) == (name, size, mtime_ns):
            current[name] = row
    return table.select([current[name] for name in sorted(current)])


def main(argv=None):
    args = parse_args(argv)
    datasets.disable_progress_bars()  # one progress bar: the videos
    # Without a GPU (or other accelerator) the processes must be CPU ones to join a gloo group under
    # `accelerate launch --multi_gpu`; otherwise each would index everything on its own.
    accelerator = Accelerator(cpu=not torch.accelerator.is_available())
    if accelerator.device.type == "cpu":
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        torch.set_num_threads(args.cpu_threads or max(1, len(os.sched_getaffinity(0)) // local_processes))
    root = Path(args.videos).resolve()
    if not root.is_dir():
        raise SystemExit(f"--videos {args.videos} is not a folder.")
    index_dir = Path(args.index_dir)
    parts_dir = index_dir / PARTS_DIR
    if accelerator.is_main_process:
        parts_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()

    started = time.perf_counter()
    videos = list_videos(root)
    done = finished_keys(parts_dir)
    pending = [path for path in videos if file_key(path, root) not in done]
    share = pending[accelerator.process_index :: accelerator.num_processes]
    accelerator.print(
        f"{len(videos)} videos under {root}: {len(videos) - len(pending)} already indexed, {len(pending)} to index "
        f"on {accelerator.num_processes} process(es)."
    )

    model = AutoModel.from_pretrained(args.model, trust_remote_code=True).eval().to(accelerator.device)
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    unreadable = index_share(
        model, processor, share, root, parts_dir, args, accelerator.is_local_main_process, accelerator.process_index
    )
    (parts_dir / f"unreadable-{accelerator.process_index:03d}.json").write_text(json.dumps(unreadable, indent=1))
    accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        unreadable = {}
        for report in sorted(parts_dir.glob("unreadable-*.json")):
            unreadable.update(json.loads(report.read_text()))
            report.unlink()
        table = gather_table(parts_dir, root)
        table_dir = index_dir / TABLE_DIR
        if table_dir.exists():
            shutil.rmtree(table_dir)
        (index_dir / FAISS_FILE).unlink(missing_ok=True)
        table.save_to_disk(str(table_dir))
        if faiss_available() and len(table):
            import faiss

            table.add_faiss_index(EMBEDDING_COLUMN, metric_type=faiss.METRIC_INNER_PRODUCT)
            table.save_faiss_index(EMBEDDING_COLUMN, str(index_dir / FAISS_FILE))
        metadata = {
            "model": args.model,
            "video_root": str(root),
            "num_videos": len(table),
            "embedding_dim": len(table[0][EMBEDDING_COLUMN]) if len(table) else None,
            "projection_dim": model.config.projection_dim,
            "vector_index": "faiss IndexFlatIP" if (index_dir / FAISS_FILE).is_file() else "exact (numpy)",
        }
        (index_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        (index_dir / UNREADABLE_FILE).write_text(json.dumps(unreadable, indent=1) + "\n")
        print(f"Indexed {len(table)} videos into {index_dir} in {time.perf_counter() - started:.1f} s.")
        if unreadable:
            print(f"Skipped {len(unreadable)} unreadable file(s), listed in {index_dir / UNREADABLE_FILE}:")
            for name, reason in sorted(unreadable.items()):
                print(f"  {name}: {reason}")
    accelerator.end_training()


if __name__ == "__main__":
    main()

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
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import AutoModel, AutoProcessor

from clip2video.training.distributed import cores_per_process, set_cpu_threads

from .index_build import IndexFolderError, RecallTooLowError, VectorIndexOptions, check_index_folder, model_reference
from .indexer import IndexingOptions, VideoIndexer
from .milvus_store import MILVUS_INDEX_TYPES, MilvusOptions, MilvusStoreError, add_store_arguments
from .video_index import APPROXIMATE_ABOVE, INDEX_TYPES


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
        "measured for text-like queries is 0.99)",
    )
    parser.add_argument("--hnsw_m", type=int, default=32, help="HNSW links per vector")
    parser.add_argument("--ef_search", type=int, default=256, help="HNSW default search breadth")
    parser.add_argument(
        "--hnsw_ef_construction", type=int, default=VectorIndexOptions.hnsw_ef_construction,
        help="HNSW build breadth (the build's cost grows with it)",
    )
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
    for name in ("batch_size", "save_every", "approximate_above", "hnsw_m", "ef_search", "hnsw_ef_construction"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1.")
    for name in ("nlist", "nprobe", "cpu_threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1.")
    if args.num_workers is not None and args.num_workers < 0:
        parser.error("--num_workers must be at least 0.")
    return args


def main(argv=None):
    args = parse_args(argv)
    root = Path(args.videos).resolve()
    if not root.is_dir():
        raise SystemExit(f"--videos {args.videos} is not a folder.")
    model_record = model_reference(args.model)
    if model_record["source"] == "unknown":
        raise SystemExit(f"--model {args.model} is neither a folder nor a Hugging Face Hub repository id.")
    try:  # before anything starts (every process reads the same folders); again under the indexer's lock
        check_index_folder(Path(args.index_dir), root)
    except IndexFolderError as error:
        raise SystemExit(str(error)) from None
    # Without a GPU (or other accelerator) the processes must be CPU ones to join a gloo group under
    # `accelerate launch --multi_gpu`; otherwise each would index everything on its own.
    accelerator = Accelerator(cpu=not torch.accelerator.is_available())
    set_cpu_threads(accelerator, args.cpu_threads)
    num_workers = args.num_workers
    if num_workers is None:
        num_workers = max(1, min(8, cores_per_process(accelerator) // 2))
    # A local folder as its absolute path: the model's `name_or_path`, which the index records.
    model = AutoModel.from_pretrained(model_record["name"], trust_remote_code=True).eval().to(accelerator.device)
    processor = AutoProcessor.from_pretrained(model_record["name"], trust_remote_code=True)
    options = IndexingOptions(
        batch_size=args.batch_size, save_every=args.save_every, num_workers=num_workers, rebuild=args.rebuild,
        wait_for_lock=args.wait_for_lock, verbose=True,
        vector_index=VectorIndexOptions(
            index_type=args.index_type, approximate_above=args.approximate_above, nlist=args.nlist,
            nprobe=args.nprobe, hnsw_m=args.hnsw_m, ef_search=args.ef_search,
            hnsw_ef_construction=args.hnsw_ef_construction, embedding_dtype=args.embedding_dtype,
        ),
        milvus=MilvusOptions(args.milvus_uri, args.milvus_collection, args.milvus_index)
        if args.store == "milvus" else None,
    )
    try:
        VideoIndexer(model, processor, options, accelerator=accelerator).index(root, args.index_dir)
    except (RecallTooLowError, MilvusStoreError) as error:
        raise SystemExit(str(error)) from None
    accelerator.end_training()


if __name__ == "__main__":
    main()

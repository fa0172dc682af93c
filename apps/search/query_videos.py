"""Search an indexed video collection with text.

    python -m clip2video.apps.search.query_videos --index_dir my_index "a man is playing the guitar" --top_k 5

prints, for each query, the best videos with the model's score (`logits_per_text`: higher is better) and the moment
(the sampled frame) that matches the words best. `--json` prints the same as JSON. The model defaults to the one the
index was built with (`index.json`); another model is refused (its embeddings are not comparable) unless `--force`.
Approximate indexes take `--candidates`, `--nprobe` (IVF) and `--ef_search` (HNSW); `--exact` scans everything.
"""

import argparse
import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoModel, AutoProcessor

from .index_build import model_reference
from .milvus_store import MilvusStoreError, MilvusVideoIndex, add_store_arguments
from .video_index import (
    DEFAULT_CANDIDATES, IndexDamagedError, ModelMismatchError, SearchHit, SearchParameters, VideoIndex,
)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("queries", nargs="+", help="one or more text queries")
    parser.add_argument(
        "--index_dir", default=None, help="folder written by apps.search.index_videos (the file store)"
    )
    parser.add_argument("--model", default=None, help="checkpoint (default: the one the index was built with)")
    parser.add_argument("--top_k", type=positive_int, default=5, help="videos per query (default 5)")
    parser.add_argument("--exact", action="store_true", help="scan every embedding, even with an approximate index")
    parser.add_argument(
        "--candidates", type=positive_int, default=DEFAULT_CANDIDATES,
        help=f"approximate indexes: videos re-scored exactly per query (default {DEFAULT_CANDIDATES})",
    )
    parser.add_argument("--nprobe", type=positive_int, default=None, help="IVF lists searched (default: the index's)")
    parser.add_argument(
        "--ef_search", type=positive_int, default=None, help="HNSW search breadth (default: the index's)"
    )
    parser.add_argument("--force", action="store_true", help="search with a model other than the index's")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_store_arguments(parser)
    parser.add_argument(
        "--filter", default=None,
        help="with --store milvus: a Milvus boolean expression over the fields path, size, mtime_ns, frame_count, "
        "e.g. 'path like \"dogs/%%\"' or 'frame_count >= 8'",
    )
    return parser.parse_args(argv)


@torch.no_grad()
def search_texts(
    index: VideoIndex,
    model,
    processor,
    queries: list[str],
    top_k: int,
    parameters: SearchParameters | None = None,
    force: bool = False,
) -> list[list[SearchHit]]:
    """The `top_k` videos of the index for each query (one list per query, in order), best first; no queries give
    an empty list, as a pipeline given none. Raises `ModelMismatchError` if `model` is not the index's (unless
    `force`), `ValueError` if `queries` is not a list of strings."""
    if isinstance(queries, str) or not isinstance(queries, (list, tuple)):
        raise ValueError(f"queries must be a list of strings, got {type(queries).__name__}.")
    if not all(isinstance(query, str) for query in queries):
        raise ValueError("queries must be a list of strings, got " + ", ".join(sorted({type(q).__name__ for q in queries})))
    if not queries:
        return []
    index.check_model(model, force=force)
    text_inputs = processor(text=queries, return_tensors="pt")
    text = model.get_text_features(
        input_ids=text_inputs["input_ids"].to(model.device),
        attention_mask=text_inputs["attention_mask"].to(model.device),
    )
    return index.search(
        text.pooler_output.float().cpu().numpy(),
        top_k,
        moment_embeddings=text.global_embeds.float().cpu().numpy(),
        parameters=parameters,
    )


def format_hits(query: str, hits: list[SearchHit]) -> str:
    lines = [f"Query: {query}", f"{'rank':>4}  {'score':>8}  {'moment':>8}  video"]
    for rank, hit in enumerate(hits, 1):
        moment = "-" if math.isnan(hit.moment_seconds) else f"{hit.moment_seconds:7.2f}s"
        lines.append(f"{rank:>4}  {hit.score:8.3f}  {moment:>8}  {hit.path}")
    return "\n".join(lines)


def recorded_model(index: VideoIndex) -> str:
    """The model an index was built with, as its `index.json` records it: a local folder (an absolute path, which must
    still exist) or a Hub id. A name recorded by an older indexer as typed (perhaps a relative folder) is refused:
    loading it from elsewhere could fetch a Hub repository of that name and run its code."""
    model = index.metadata["model"]
    name, source = model["name"], model.get("source")
    where = getattr(index, "index_dir", None) or "The index"
    if source == "local" or (source is None and os.path.isabs(name)):
        if not Path(name).is_dir():
            raise SystemExit(
                f"{where} was built with the local checkpoint {name}, which no longer exists: pass --model "
                "with that checkpoint (its fingerprint is checked)."
            )
        return name
    if source == "hub":
        return name
    raise SystemExit(
        f"{where} records its model as {name!r}, without saying whether that is a local folder or a Hub "
        "repository (a local folder would be relative to wherever the indexer ran): pass --model with the checkpoint "
        "it was built with (its fingerprint is checked)."
    )


def main(argv=None):
    args = parse_args(argv)
    if (args.store == "milvus") != (args.milvus_uri is not None) or (args.store == "file") != bool(args.index_dir):
        raise SystemExit("Give --index_dir (the file store), or --store milvus with --milvus_uri.")
    if args.filter and args.store != "milvus":
        raise SystemExit("--filter needs --store milvus; the file index searches every video.")
    try:
        if args.store == "milvus":
            index = MilvusVideoIndex(args.milvus_uri, args.milvus_collection)
        else:
            index = VideoIndex(args.index_dir)
    except (FileNotFoundError, NotADirectoryError, IndexDamagedError, MilvusStoreError) as error:
        raise SystemExit(str(error)) from None
    if args.model:
        reference = model_reference(args.model)  # a local folder is loaded as one, never looked up on the Hub
        if reference["source"] == "unknown":
            raise SystemExit(f"--model {args.model} is neither a folder nor a Hugging Face Hub repository id.")
        model_name = reference["name"]
    else:
        model_name = recorded_model(index)
    model = AutoModel.from_pretrained(model_name, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_name, trust_remote_code=True)
    parameters = SearchParameters(
        exact=True if args.exact else None, candidates=args.candidates, nprobe=args.nprobe, ef_search=args.ef_search,
        filter=args.filter,
    )
    try:
        results = search_texts(index, model, processor, args.queries, args.top_k, parameters, force=args.force)
    except (ModelMismatchError, IndexDamagedError, MilvusStoreError, ValueError) as error:
        raise SystemExit(str(error)) from None
    search = index.describe_search(parameters)
    if args.json:
        print(json.dumps(
            [{"query": q, "hits": [asdict(h) for h in hits], "search": search} for q, hits in zip(args.queries, results)]
        ))
    else:
        print(f"Search: {search}\n")
        print("\n\n".join(format_hits(query, hits) for query, hits in zip(args.queries, results)))


if __name__ == "__main__":
    main()

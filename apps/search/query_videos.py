"""Search an indexed video collection with text.

    python -m clip2video.apps.search.query_videos --index_dir my_index "a man is playing the guitar" --top_k 5

prints, for each query, the best videos with the model's score (`logits_per_text`: higher is better) and the moment
(the sampled frame) that matches the words best. `--json` prints the same as JSON. The model defaults to the one the
index was built with (`index.json`); it must be that model, the embeddings are only comparable within one model.
"""

import argparse
import json
import math
from dataclasses import asdict

import torch
from transformers import AutoModel, AutoProcessor

from .video_index import SearchHit, VideoIndex


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("queries", nargs="+", help="one or more text queries")
    parser.add_argument("--index_dir", required=True, help="folder written by apps.search.index_videos")
    parser.add_argument("--model", default=None, help="checkpoint (default: the one the index was built with)")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


@torch.no_grad()
def search_texts(index: VideoIndex, model, processor, queries: list[str], top_k: int) -> list[list[SearchHit]]:
    """The `top_k` videos of the index for each query, best first."""
    text_inputs = processor(text=queries, return_tensors="pt")
    text_embeddings = model.get_text_features(
        input_ids=text_inputs["input_ids"].to(model.device),
        attention_mask=text_inputs["attention_mask"].to(model.device),
    )
    logit_scale = model.logit_scale.exp().item()
    return [index.search(embedding, logit_scale, top_k) for embedding in text_embeddings.float().cpu().numpy()]


def format_hits(query: str, hits: list[SearchHit]) -> str:
    lines = [f"Query: {query}", f"{'rank':>4}  {'score':>8}  {'moment':>8}  video"]
    for rank, hit in enumerate(hits, 1):
        moment = "-" if math.isnan(hit.moment_seconds) else f"{hit.moment_seconds:7.2f}s"
        lines.append(f"{rank:>4}  {hit.score:8.3f}  {moment:>8}  {hit.path}")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    index = VideoIndex(args.index_dir)
    model_name = args.model or index.metadata["model"]
    model = AutoModel.from_pretrained(model_name, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_name, trust_remote_code=True)
    results = search_texts(index, model, processor, args.queries, args.top_k)
    if args.json:
        print(json.dumps([{"query": q, "hits": [asdict(h) for h in hits]} for q, hits in zip(args.queries, results)]))
    else:
        print("\n\n".join(format_hits(query, hits) for query, hits in zip(args.queries, results)))


if __name__ == "__main__":
    main()

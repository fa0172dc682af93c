"""Exact search at scale: `exact_top_k` (what `query_videos --exact` and exact indexes run) over N unit float16
vectors in a memory map, one query at a time (float16 selection re-scored in float32, `unit_rows=True`, as a video
index runs it) and batched, beside the float32 scan alone (`unit_rows=False`) and numpy's float16 mat-vec (the scan
both replaced), alternately in the same process, and checked against a float32 brute force. Prints the load.

    python benchmarks/benchmark_exact_scan.py --vectors 1000000
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from clip2video.apps.search.video_index import exact_top_k


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=1024, help="1024: with the Temporal Alignment Block (2 GB at 10^6)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--work_dir", default=None, help="where the memory map is written (a temporary folder)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="clip2video-exact-"))
    path = work_dir / f"vectors-{args.vectors}x{args.dim}.npy"
    if not path.is_file():
        stored = np.lib.format.open_memmap(path, "w+", np.float16, (args.vectors, args.dim))
        for start in range(0, args.vectors, 100_000):
            block = rng.standard_normal((min(100_000, args.vectors - start), args.dim), dtype=np.float32)
            stored[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
        stored.flush()
        del stored
    embeddings = np.load(path, mmap_mode="r")
    queries = rng.standard_normal((args.repeats + args.batch, args.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    exact_top_k(embeddings, queries[:1], 10)  # pages the map in, as a running service has it
    single, scan, numpy_scan = [], [], []
    for index in range(args.repeats):  # alternately, so that all see the same load
        start = time.perf_counter()
        exact_top_k(embeddings, queries[index : index + 1], 10, unit_rows=True)
        single.append(time.perf_counter() - start)
        start = time.perf_counter()
        exact_top_k(embeddings, queries[index : index + 1], 10)
        scan.append(time.perf_counter() - start)
        start = time.perf_counter()
        np.asarray(embeddings @ queries[index].astype(np.float16))
        numpy_scan.append(time.perf_counter() - start)
    start = time.perf_counter()
    exact_top_k(embeddings, queries[args.repeats :], 10)
    batched = (time.perf_counter() - start) / args.batch

    scores, rows = exact_top_k(embeddings, queries[:1], 10, unit_rows=True)
    brute = np.asarray(embeddings, np.float32) @ queries[0]
    top = np.argsort(-brute, kind="stable")[:10]
    print(f"{args.vectors} x {args.dim} float16, load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"exact_top_k, one query: median {np.median(single):.3f} s (runs {', '.join(f'{t:.3f}' for t in single)})")
    print(f"float32 scan alone, one query: median {np.median(scan):.3f} s (runs {', '.join(f'{t:.3f}' for t in scan)})")
    print(f"exact_top_k, {args.batch} batched: {batched * 1000:.1f} ms per query")
    print(f"numpy float16 mat-vec, one query: median {np.median(numpy_scan):.3f} s")
    print(f"same top-10 rows as float32 brute force: {rows[0].tolist() == top.tolist()}; "
          f"largest score difference {float(np.abs(scores[0] - brute[top]).max()):.1e}")


if __name__ == "__main__":
    main()

"""The checks that need a GPU, in one script: run where CUDA is available (the parts skip without it).

    PYTHONPATH=. python benchmarks/gpu_check.py [--parts model serving training indexing]

Each part lives in its own module beside this one and prints its own figures; a part that fails prints its error
and the others still run. The exit code is non-zero when any part failed.
"""

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PARTS = {
    "model": "gpu_check_model",  # get_video_features throughput, fp32 vs bf16 (issue: transformers 5)
    "serving": "gpu_check_serving",  # the endpoint handler on CUDA: latency per request, GPU memory
    "training": "gpu_check_training",  # 200 bf16 training steps, plain and FSDP on one GPU
    "indexing": "gpu_check_indexing",  # decode + embed overlapped: videos/s of 10-second clips, end to end
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: CUDA is not available; every part is skipped.")
        return 0
    print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    failed = []
    for name in args.parts:
        started = time.perf_counter()
        print(f"\n== {name} ==", flush=True)
        try:
            importlib.import_module(PARTS[name]).run()
        except Exception:  # one part's failure must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
        print(f"-- {name}: {time.perf_counter() - started:.0f} s", flush=True)
        torch.cuda.empty_cache()
    if failed:
        print(f"gpu_check: failed parts: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

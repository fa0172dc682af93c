"""Times the README's first command, `accelerate launch training/run.py`, from scratch (no cached data).

    python benchmarks/benchmark_main_job.py [--workdir DIR]

Runs the main job in an empty working directory (so the synthetic data is generated and decoded as on a first run),
then prints the machine, the wall time of the whole job and of its phases, and the text-to-video R@1 of CLIP2Video
and of the mean-pooling baseline, against the goals: at most 10 minutes on 2 CPU cores, R@1 at least 95% on at
least 100 distinct test captions.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 600
GOAL_R1 = 95.0
GOAL_CAPTIONS = 100


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{model}, {len(os.sched_getaffinity(0))} cores available, torch {torch.__version__}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="Where to run (default: a new temporary folder, removed afterwards).")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="clip2video_main_job_"))
    workdir.mkdir(parents=True, exist_ok=True)
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"

    load_before = os.getloadavg()
    started = time.perf_counter()
    result = subprocess.run([accelerate, "launch", str(REPOSITORY / "training" / "run.py")], cwd=workdir,
                            capture_output=True, text=True)
    seconds = time.perf_counter() - started
    load_after = os.getloadavg()
    if result.returncode != 0:
        sys.exit(f"the main job failed:\n{result.stderr[-4000:]}")
    results = json.loads((workdir / "outputs" / "clip2video-synthetic" / "results.json").read_text())

    runs = results["runs"]
    clip2video, mean_pooling = runs["clip2video"]["metrics"], runs["mean_pooling"]["metrics"]
    distinct_captions = len(set(results["test_split"]["captions"]))
    print(f"machine: {machine()}")
    print(f"load average (1 min) before / after: {load_before[0]:.1f} / {load_after[0]:.1f}")
    print(f"command: accelerate launch training/run.py (in {workdir})")
    print("phases (s): " + ", ".join(f"{k.replace('_seconds', '')} {v:.0f}" for k, v in results["timings"].items()))
    for name, run in runs.items():
        print(f"  {name}: training {run['timings']['training_seconds']:.0f} s, evaluation "
              f"{run['timings']['evaluation_seconds']:.0f} s")
    print(f"test split: {clip2video['num_captions']} captions ({distinct_captions} distinct), "
          f"{clip2video['num_videos']} videos")
    print()
    print("| model | T2V R@1 | T2V R@5 | V2T R@1 | whole job |")
    print("|---|---|---|---|---|")
    print(f"| CLIP2Video | {clip2video['t2v_R1']:.1f} | {clip2video['t2v_R5']:.1f} | {clip2video['v2t_R1']:.1f} | "
          f"{seconds:.0f} s |")
    print(f"| mean pooling, same budget | {mean_pooling['t2v_R1']:.1f} | {mean_pooling['t2v_R5']:.1f} | "
          f"{mean_pooling['v2t_R1']:.1f} | |")
    print()
    goals = {
        f"whole job <= {GOAL_SECONDS} s": seconds <= GOAL_SECONDS,
        f"CLIP2Video T2V R@1 >= {GOAL_R1}%": clip2video["t2v_R1"] >= GOAL_R1,
        f">= {GOAL_CAPTIONS} distinct test captions": distinct_captions >= GOAL_CAPTIONS,
    }
    for goal, met in goals.items():
        print(f"{'met' if met else 'NOT MET'}: {goal}")
    if not args.workdir:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()

"""Times the README's first command, `accelerate launch training/run.py`, from scratch (no cached data).

    python benchmarks/benchmark_main_job.py [--workdir DIR] [--runs N] [--record FILE] [-- EXTRA JOB ARGUMENTS]

Runs the main job in an empty working directory (so the synthetic data is generated and decoded as on a first run),
then prints the machine, the wall time of the whole job and of its phases, and the text-to-video R@1 of CLIP2Video
and of the mean-pooling baseline, against the goals: at most 10 minutes on 2 CPU cores, R@1 at least 95% on at
least 100 distinct test captions.

The metrics are a function of the bytes of the synthetic clips, the decoded frames and every floating-point
reduction of training. On one machine they repeat exactly, whatever else runs on it; across machines they are the
same where these are the same, so the record names them: the torch threads of the job (`--cpu_threads auto` is the
number of cores: a sum split over more threads rounds differently), the CPU kernels torch dispatches to (AVX2 or
AVX-512 kernels accumulate in different orders), and the versions of torch, transformers, accelerate, numpy and
PyAV with its bundled FFmpeg and x264 (which encode and decode the clips). `--runs 2` runs the job twice, each in a
fresh folder, and checks that the two trained models are bit for bit the same.
"""

import argparse
import importlib.metadata
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
OUTPUT = Path("outputs") / "clip2video-synthetic"


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


def deciding_versions() -> dict[str, str]:
    """What the main job's metrics depend on besides the code (see the module docstring)."""
    import av
    import torch

    versions = {
        "torch threads (--cpu_threads auto)": str(len(os.sched_getaffinity(0))),
        "torch CPU kernels": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
    }
    for package in ("torch", "transformers", "accelerate", "numpy", "av"):
        versions[package] = importlib.metadata.version(package)
    versions["libavcodec"] = ".".join(map(str, av.library_versions["libavcodec"]))
    return versions


def run_job(workdir: Path, extra_arguments: list[str]) -> tuple[dict, float, tuple[float, float]]:
    """Runs the README's first command in `workdir`: (results.json, wall seconds, load average before and after)."""
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = subprocess.run([accelerate, "launch", str(REPOSITORY / "training" / "run.py"), *extra_arguments],
                            cwd=workdir, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"the main job failed in {workdir}:\n{result.stderr[-4000:]}")
    results = json.loads((workdir / OUTPUT / "results.json").read_text())
    return results, seconds, (load_before, os.getloadavg()[0])


def same_weights(first: Path, second: Path) -> bool:
    """Whether two saved models hold the same tensors, bit for bit."""
    import torch
    from safetensors.torch import load_file

    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="Where to run (default: a new temporary folder, removed afterwards); with "
                        "--runs N, run i runs in its subfolder run<i>.")
    parser.add_argument("--runs", type=int, default=1, help="fresh runs; from 2, checks they train the same weights")
    parser.add_argument("--record", help="also write the record (machine, versions, metrics per run) to this JSON file")
    parser.add_argument("job_arguments", nargs="*", help="after --: passed to training/run.py (e.g. smaller settings)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1.")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="clip2video_main_job_"))
    folders = [workdir] if args.runs == 1 else [workdir / f"run{index + 1}" for index in range(args.runs)]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        if any(folder.iterdir()):
            sys.exit(f"{folder} is not empty: the benchmark measures a first run (data generated and decoded).")

    versions = deciding_versions()
    print(f"machine: {machine()}")
    print("versions: " + ", ".join(f"{name} {value}" for name, value in versions.items()))
    record = {"machine": machine(), "versions": versions, "job_arguments": args.job_arguments, "runs": []}
    for index, folder in enumerate(folders):
        results, seconds, loads = run_job(folder, args.job_arguments)
        if args.runs > 1:
            print(f"\n== run {index + 1} of {args.runs} ==")
        record["runs"].append(report(results, seconds, loads, folder, args.job_arguments))
    if args.runs > 1:
        identical = all(same_weights(folders[0] / OUTPUT, folder / OUTPUT) for folder in folders[1:])
        record["identical_weights"] = identical
        print(f"\n{'identical' if identical else 'DIFFERENT'} weights in the {args.runs} runs")
    if args.record:
        Path(args.record).write_text(json.dumps(record, indent=1) + "\n")
    if not args.workdir:
        shutil.rmtree(workdir)
    if args.runs > 1 and not record["identical_weights"]:
        sys.exit(1)


def report(results: dict, seconds: float, loads: tuple[float, float], workdir: Path, job_arguments: list[str]) -> dict:
    """Prints one run's table and goals; returns its entry of the record."""
    runs = results["runs"]
    clip2video, mean_pooling = runs["clip2video"]["metrics"], runs["mean_pooling"]["metrics"]
    distinct_captions = len(set(results["test_split"]["captions"]))
    print(f"load average (1 min) before / after: {loads[0]:.1f} / {loads[1]:.1f}")
    print(f"command: accelerate launch training/run.py{''.join(' ' + a for a in job_arguments)} (in {workdir})")
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
    return {
        "seconds": round(seconds, 1),
        "load_average": list(loads),
        "metrics": {name: {key: run["metrics"][key] for key in ("t2v_R1", "t2v_R5", "v2t_R1")}
                    for name, run in runs.items()},
    }


if __name__ == "__main__":
    main()

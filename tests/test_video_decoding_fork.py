"""Decoding in forked processes after the parent decoded: DataLoader workers whose dataset calls the processor, a
fork `Pool`, a bare `os.fork`, a fork while another thread of the parent holds a decoder, and a pipeline with
`num_workers`. A forked child inherits the parent's FFmpeg objects without their threads; using or freeing one there
blocks for good, so each scenario runs in a fresh process group with a hard timeout: a regression fails, naming the
scenario it hung in, instead of hanging the suite."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.helpers.processes import REPO
from tests.helpers.videos import natural_frames, write_video


pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork is the default start method on Linux only")

TIMEOUT_SECONDS = 120

SCENARIOS = r"""
import hashlib, json, multiprocessing, os, sys, threading
import torch
from clip2video.processing import CLIP2VideoVideoProcessor
from clip2video.processing import video_decoding_clip2video as decoding

# Two torch threads: the decoder runs with its frame threads in the parent and in os.fork's children; DataLoader
# workers and the pool's children have one torch thread and decode without.
torch.set_num_threads(2)
video, checkpoint = sys.argv[1], sys.argv[2]
processor = CLIP2VideoVideoProcessor()
report = {}


def step(name):
    # Flushed before each scenario: on a hang the test names the last one started.
    print("STEP", name, flush=True)


def digest(video_path=video):
    return hashlib.sha256(processor(video_path, return_tensors="pt")["pixel_values_videos"].numpy()).hexdigest()


class Videos(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return processor(video, return_tensors="pt")["pixel_values_videos"][0]


step("parent")
parent = digest()
report["parent"] = parent

step("dataloader")
loader = torch.utils.data.DataLoader(Videos(), batch_size=2, num_workers=2, multiprocessing_context="fork")
report["dataloader"] = [hashlib.sha256(clip.numpy()).hexdigest() for batch in loader for clip in batch[:, None]]

step("pool")
# One torch thread per child, as DataLoader workers have: torch's OpenMP pool, used by the parent, is not fork-safe
# itself (its preprocessing would hang in the children whatever the decoder does).
with multiprocessing.get_context("fork").Pool(2, initializer=torch.set_num_threads, initargs=(1,)) as pool:
    report["pool"] = pool.map(digest, [video] * 3)

def frames_digest():
    # The decoder alone, no torch op: with two torch threads the child decodes with FFmpeg's frame threads too.
    decoded = decoding.read_video_frames(video, lambda table: list(range(0, len(table.times), 7)))
    return hashlib.sha256(b"".join(frame.tobytes() for frame in decoded.frames)).hexdigest()


step("os.fork")
report["parent frames"] = frames_digest()
reader, writer = os.pipe()
pid = os.fork()
if pid == 0:
    frames = frames_digest()
    torch.set_num_threads(1)  # for the preprocessing: torch's OpenMP pool is not fork-safe (see the pool)
    os.write(writer, json.dumps({"frames": frames, "processed": digest()}).encode())
    os._exit(0)
os.close(writer)
report["os.fork"] = json.loads(os.read(reader, 4096).decode())
os.waitpid(pid, 0)

step("fork while another thread holds a converter")
decoded, release = threading.Event(), threading.Event()


def decode_and_wait():
    digest()
    decoded.set()
    release.wait()


holder = threading.Thread(target=decode_and_wait)
holder.start()
decoded.wait()
parents_converters = [id(converter) for converter in decoding._live_converters]
reader, writer = os.pipe()
pid = os.fork()
if pid == 0:
    # CPython frees the other threads' thread-locals in the child: the parent's converters must survive that, and
    # the child must make its own.
    kept = {id(converter) for converter in decoding._inherited_converters}
    torch.set_num_threads(1)
    result = digest()
    own = decoding._converters.converter
    answer = {"digest": result, "kept": sorted(kept) == sorted(parents_converters), "own": own.pid == os.getpid()}
    os.write(writer, json.dumps(answer).encode())
    os._exit(0)
os.close(writer)
report["thread"] = json.loads(os.read(reader, 4096).decode())
os.waitpid(pid, 0)
release.set()
holder.join()

step("pipeline")
from transformers import pipeline

classifier = pipeline("zero-shot-video-classification", model=checkpoint, trust_remote_code=True)
labels = ["a red square", "a green square"]
alone = classifier(video, candidate_labels=labels)
in_workers = classifier([video] * 3, candidate_labels=labels, num_workers=2, batch_size=1)
report["pipeline"] = {"alone": alone, "in_workers": in_workers}

step("done")
print("REPORT", json.dumps(report), flush=True)
"""


def run_with_hard_timeout(arguments: list[str]) -> tuple[int | None, str]:
    """Runs the scenarios in a new process group; on timeout the whole group (workers included) is killed and the
    return code is None."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SCENARIOS), *arguments], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT_SECONDS)
        return process.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return None, output


@pytest.mark.slow
def test_every_kind_of_forked_worker_decodes_after_the_parent_did(tmp_path, tiny_checkpoint):
    # B-frames and several keyframes: the decoder seeks and uses frame threads, as on real videos.
    video = write_video(tmp_path / "clip.mp4", 60, 10, width=96, height=64, frames=natural_frames(60, 64, 96), g="12")
    returncode, output = run_with_hard_timeout([video, str(tiny_checkpoint)])
    steps = [line[5:] for line in output.splitlines() if line.startswith("STEP ")]
    assert returncode is not None, f"hung in scenario {steps[-1]!r} (killed after {TIMEOUT_SECONDS} s):\n{output[-3000:]}"
    assert returncode == 0, f"failed in scenario {steps[-1]!r}:\n{output[-3000:]}"
    report = json.loads(next(line[7:] for line in output.splitlines() if line.startswith("REPORT ")))

    # Every child decodes exactly what the parent decoded.
    parent = report["parent"]
    assert report["dataloader"] == [parent] * 4
    assert report["pool"] == [parent] * 3
    assert report["os.fork"] == {"frames": report["parent frames"], "processed": parent}
    assert report["thread"] == {"digest": parent, "kept": True, "own": True}
    pipeline_report = report["pipeline"]
    assert pipeline_report["in_workers"] == [pipeline_report["alone"]] * 3

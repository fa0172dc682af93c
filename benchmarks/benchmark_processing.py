"""Videos per second from an mp4 on disk to `pixel_values_videos`, for CLIP2VideoVideoProcessor and two baselines.

Pipelines, each producing the same 12 CLIP-preprocessed frames per video (`[1, 12, 3, 224, 224]`):

- `clip2video`: `CLIP2VideoVideoProcessor()(path)`: reads the frame timestamps, decodes only the sampled frames (seeking
  to the keyframe before them, skipping frames nothing refers to), converts and preprocesses those 12.
- `decode_all`: PyAV decodes and converts every frame to RGB, then the same 12 frames are preprocessed (what a
  processor that decodes whole videos does).
- `floor`: only what no exact method can skip: the same 12 frames chosen, then decoded from the keyframe before them
  with every frame that something refers to (the non-reference frames that are not sampled skipped by the decoder,
  its threads as the processor sets them), and nothing else: no RGB conversion, no preprocessing, no Python per frame beyond
  the decoder's loop. The processor's time over this is what is left to gain.
- `authors`: the CLIP2Video authors' pipeline: `ffmpeg -i video -r 5 -q 0 %08d.jpg` into a temporary folder
  (`sample_frame.py`), then `RawFrameExtractor.video_to_tensor`: list the JPEGs, `np.linspace` twice, PIL open +
  `convert("RGB")`, torchvision Resize(224, bicubic) / CenterCrop / ToTensor / Normalize.

Test videos (30 fps H.264 made with ffmpeg's `testsrc2` plus temporal noise, `libx264 -preset veryfast`, ffmpeg's
default GOP of 250 frames and 3 B-frames) are written once into `--cache-dir`. Needs the `ffmpeg` command line
(`apt-get install ffmpeg`) for the test videos and the authors' pipeline.

Each pipeline's wall time and CPU time (this process's threads and its children, the authors' ffmpeg included) are
reported: on a shared, loaded machine the CPU time is the steadier comparison, the wall time what a user waits for.

    python benchmarks/benchmark_processing.py --repeats 3
"""

import argparse
import bisect
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
from av.video.reformatter import VideoReformatter
import numpy as np
import torch
from PIL import Image
from torchvision import transforms


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clip2video.processing import CLIP2VideoVideoProcessor  # noqa: E402
from clip2video.processing.frame_sampling_clip2video import select_source_frames  # noqa: E402


VIDEOS = {  # name: (width, height, seconds)
    "short_320x240": (320, 240, 10),
    "short_1280x720": (1280, 720, 10),
    "long_320x240": (320, 240, 180),
    "long_1280x720": (1280, 720, 180),
}
FPS = 30
FEATURE_FRAMERATE, MAX_FRAMES = 2, 12  # MSR-VTT settings: 2.5 fps, 12 frames


def make_video(path: Path, width: int, height: int, seconds: int):
    if path.exists():
        return
    tmp = path.with_suffix(".partial.mp4")
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={FPS}",
            "-t", str(seconds), "-vf", "noise=alls=8:allf=t", "-c:v", "libx264", "-preset", "veryfast",
            "-pix_fmt", "yuv420p", str(tmp),
        ],
        check=True,
    )
    tmp.rename(path)


def run_clip2video(processor, path):
    return processor(str(path), return_tensors="pt")["pixel_values_videos"]


def run_decode_all(processor, path):
    # Same frame choice as clip2video (from the packet timestamps), but every frame is decoded and converted.
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = sorted(float(packet.pts * stream.time_base) for packet in container.demux(stream) if packet.size)
        fps = float(stream.average_rate)
        chosen = set(select_source_frames(times, [None] * len(times), fps, 5 / FEATURE_FRAMERATE, MAX_FRAMES))
        container.seek(0)
        stream.thread_type = "AUTO"
        frames = []
        to_rgb = VideoReformatter()  # one scaler for all frames, as the processor does
        for index, frame in enumerate(container.decode(stream)):
            rgb = to_rgb.reformat(frame, format="rgb24").to_ndarray()
            if index in chosen:
                frames.append(rgb)
    frames = np.stack(frames)
    return processor(frames, return_tensors="pt")["pixel_values_videos"]


def run_floor(processor, path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        index = [(packet.pts, packet.is_keyframe) for packet in container.demux(stream) if packet.size]
        frame_pts = sorted(pts for pts, _ in index)
        keyframes = sorted(pts for pts, keyframe in index if keyframe)
        times = [float(pts * stream.time_base) for pts in frame_pts]
        chosen = select_source_frames(times, [None] * len(times), float(stream.average_rate), 5 / FEATURE_FRAMERATE,
                                      MAX_FRAMES)
        wanted = [frame_pts[index] for index in chosen]
        if torch.get_num_threads() > 1:  # the processor's rule: decoder threads where torch uses several
            stream.thread_type = "AUTO"
        else:
            stream.codec_context.thread_count = 1
        codec, found, position = stream.codec_context, 0, None
        for target in wanted:
            keyframe = keyframes[max(bisect.bisect_right(keyframes, target) - 1, 0)]
            if position is None or keyframe > position:
                container.seek(keyframe, stream=stream, backward=True)
                packets = container.demux(stream)
            for packet in packets:
                codec.skip_frame = "DEFAULT" if packet.pts in wanted else "NONREF"
                frames = packet.decode()
                position = max([frame.pts for frame in frames], default=position)
                if position is not None and position >= target:
                    found += 1
                    break
    return found


AUTHORS_TRANSFORM = transforms.Compose(
    [
        transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ]
)


def run_authors(processor, path):
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            ["ffmpeg", "-v", "0", "-i", str(path), "-r", "5", "-q", "0", os.path.join(folder, "%08d.jpg")], check=True
        )
        names = sorted(os.listdir(folder))
        kept = np.linspace(0, len(names) - 1, num=len(names) // FEATURE_FRAMERATE, dtype=int)
        picks = np.arange(len(kept))
        if len(kept) > MAX_FRAMES:
            picks = np.linspace(0, len(kept) - 1, MAX_FRAMES, dtype=int)
        images = [AUTHORS_TRANSFORM(Image.open(os.path.join(folder, names[kept[i]])).convert("RGB")) for i in picks]
        return torch.stack(images)[None]


PIPELINES = {"clip2video": run_clip2video, "decode_all": run_decode_all, "floor": run_floor, "authors": run_authors}


def cpu_seconds() -> float:
    """CPU time of this process's threads and of its finished children (the authors' ffmpeg)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "clip2video_benchmark")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per video and pipeline (median reported)")
    parser.add_argument("--videos", nargs="+", default=list(VIDEOS), choices=list(VIDEOS))
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        raise SystemExit("This benchmark needs the ffmpeg command line: apt-get install ffmpeg")

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    processor = CLIP2VideoVideoProcessor(fps=5 / FEATURE_FRAMERATE, num_frames=MAX_FRAMES)
    print(f"torch {torch.__version__}, PyAV {av.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    print(
        f"{'video':<16}{'pipeline':<12}{'s/video':>9}{'videos/s':>10}{'speed-up vs authors':>21}{'CPU s/video':>12}"
        f"{'CPU speed-up':>13}"
    )
    for name in args.videos:
        width, height, seconds = VIDEOS[name]
        path = args.cache_dir / f"{name}.mp4"
        make_video(path, width, height, seconds)
        times = {pipeline: [] for pipeline in args.pipelines}
        cpu_times = {pipeline: [] for pipeline in args.pipelines}
        for pipeline in args.pipelines:  # warm-up, and a check that all pipelines give a 12-frame clip
            output = PIPELINES[pipeline](processor, path)
            assert output == MAX_FRAMES if pipeline == "floor" else output.shape == (1, MAX_FRAMES, 3, 224, 224)
        for _ in range(args.repeats):  # interleaved, so that load changes on the machine hit every pipeline alike
            for pipeline in args.pipelines:
                cpu_start, start = cpu_seconds(), time.perf_counter()
                PIPELINES[pipeline](processor, path)
                times[pipeline].append(time.perf_counter() - start)
                cpu_times[pipeline].append(cpu_seconds() - cpu_start)
        medians = {pipeline: statistics.median(values) for pipeline, values in times.items()}
        cpu_medians = {pipeline: statistics.median(values) for pipeline, values in cpu_times.items()}
        for pipeline, seconds_per_video in medians.items():
            speedup = f"{medians['authors'] / seconds_per_video:.1f}x" if "authors" in medians else "-"
            cpu = cpu_medians[pipeline]
            cpu_speedup = f"{cpu_medians['authors'] / cpu:.1f}x" if "authors" in medians else "-"
            print(
                f"{name:<16}{pipeline:<12}{seconds_per_video:>9.3f}{1 / seconds_per_video:>10.2f}{speedup:>21}"
                f"{cpu:>12.3f}{cpu_speedup:>13}"
            )
        print(f"{'':<16}load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

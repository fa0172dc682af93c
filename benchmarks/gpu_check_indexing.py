"""GPU check part: indexing (see gpu_check.py). The end-to-end indexing rate in videos/s: 10-second clips decoded and
embedded the way `apps.search.indexer` does it, decoding overlapped with embedding.

    PYTHONPATH=. python benchmarks/gpu_check.py --parts indexing               # CUDA: 128 clips, ViT-B/32, bf16 weights
    PYTHONPATH=. python benchmarks/gpu_check_indexing.py --tiny --device cpu   # smoke check on any machine

The clips are 10 s, 30 fps, 320x240 H.264 (`gpu_check_serving.write_clip`), one file written and copied under
`--videos` names. The model has ViT-B/32 sizes, random weights, loaded in bf16 on CUDA (`from_pretrained(...,
dtype=torch.bfloat16)`, what a GPU indexer runs) and float32 on the CPU. Paths, each after one warm-up batch:

- `cpu decode`: the indexer's own loop: `VideoFiles` (the processor decodes with PyAV) in `--num_workers`
  DataLoader worker processes, and `embed_videos` on batches of `--batch_size` while the workers decode the next.
- `torchcodec decode` (when torchcodec imports): torchcodec decodes on the model's device (NVDEC on CUDA) the frames
  the processor samples (`select_source_frames` on the constant-rate frame table), the video processor resizes and
  normalises them there (`do_sample_frames=False`), in a thread that prepares the next batch while the model embeds
  this one. On the CPU (the smoke check) it runs the same code with torchcodec's CPU decoder.
- `model only`: `embed_videos` on one decoded batch, repeatedly: the ceiling the two above approach.

Expected to take about two minutes on a 16-core H100 machine (not yet run on one).
"""

import argparse
import concurrent.futures
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_check_model import TINY  # noqa: E402
from gpu_check_serving import write_clip  # noqa: E402


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_clips(folder: Path, count: int, seconds: int, width: int, height: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    first = write_clip(folder / "clip_00000.mp4", seconds=seconds, width=width, height=height)
    paths = [first]
    for index in range(1, count):
        paths.append(folder / f"clip_{index:05d}.mp4")
        shutil.copyfile(first, paths[-1])
    return paths


def build(device: torch.device, tiny: bool, folder: Path):
    """The model (bf16 weights on CUDA, float32 on the CPU) and a processor with the default video settings."""
    from clip2video.modeling_clip2video import CLIP2VideoConfig, CLIP2VideoModel
    from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer

    torch.manual_seed(0)
    config = CLIP2VideoConfig(**TINY) if tiny else CLIP2VideoConfig()
    CLIP2VideoModel(config).save_pretrained(folder)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = CLIP2VideoModel.from_pretrained(folder, dtype=dtype).eval().to(device)
    size = config.vision_config.image_size
    video_processor = CLIP2VideoVideoProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return model, CLIP2VideoProcessor(video_processor=video_processor, tokenizer=offline_clip_tokenizer())


def rate_with_workers(model, processor, paths: list[Path], batch_size: int, num_workers: int) -> tuple[float, int]:
    """The indexer's loop (DataLoader workers decode, the model embeds): videos/s after a warm-up batch, and how
    many videos were embedded."""
    from clip2video.apps.search.indexer import VideoFiles, _one_item, embed_videos
    from clip2video.processing.video_processing_clip2video import stack_videos

    dataset = VideoFiles(paths, paths[0].parent, processor)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, collate_fn=_one_item, num_workers=num_workers,
        prefetch_factor=max(2, -(-batch_size // num_workers)) if num_workers else None,
    )
    embedded, started, batch = 0, None, []
    for item in iter(loader):
        if "error" in item:
            raise RuntimeError(f"{item['name']}: {item['error']}")
        batch.append(item["inputs"])
        if len(batch) == batch_size:
            embed_videos(model, stack_videos(batch))
            _synchronize(model.device)
            if started is None:  # the first batch waits for the workers to start and warms the kernels up
                started = time.perf_counter()
            else:
                embedded += len(batch)
            batch = []
    return embedded / (time.perf_counter() - started), embedded


def torchcodec_unavailable() -> str | None:
    """None when torchcodec imports here, else why not."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception as error:  # ImportError, or a missing FFmpeg / CUDA library raised while loading it
        return f"torchcodec does not import: {type(error).__name__}: {error}"
    return None


def torchcodec_inputs(paths: list[Path], video_processor, device: torch.device) -> dict[str, torch.Tensor]:
    """`embed_videos`' inputs for constant-rate videos, decoded by torchcodec on `device` (NVDEC on CUDA): the frames
    the processor samples (`select_source_frames` on the frame table of the average rate), resized and normalised on
    `device` by the video processor."""
    from torchcodec.decoders import VideoDecoder

    from clip2video.processing.frame_sampling_clip2video import select_source_frames

    clips, times = [], []
    for path in paths:
        decoder = VideoDecoder(str(path), device=str(device), seek_mode="exact")
        count, fps = decoder.metadata.num_frames, float(decoder.metadata.average_fps)
        frame_times = [index / fps for index in range(count)]
        chosen = select_source_frames(frame_times, [1 / fps] * count, fps, video_processor.fps,
                                      video_processor.num_frames)
        frames = decoder.get_frames_at(indices=chosen)
        clips.append(frames.data)
        times.append(frames.pts_seconds.double().cpu())
    inputs = video_processor(videos=clips, do_sample_frames=False, device=str(device), return_tensors="pt")
    padded = torch.full(inputs["video_mask"].shape, float("nan"), dtype=torch.float64)
    for row, clip_times in enumerate(times):
        padded[row, : len(clip_times)] = clip_times
    return {**inputs, "video_timestamps": padded}


def rate_with_torchcodec(model, processor, paths: list[Path], batch_size: int) -> tuple[float, int]:
    """torchcodec decodes the sampled frames on the model's device (NVDEC on CUDA) and the video processor prepares
    them there, one batch ahead of the model in a thread: videos/s after a warm-up batch, and how many videos were
    embedded."""
    from clip2video.apps.search.indexer import embed_videos

    device = model.device

    def prepare(batch_paths):
        return torchcodec_inputs(batch_paths, processor.video_processor, device)

    batches = [paths[start:start + batch_size] for start in range(0, len(paths) - batch_size + 1, batch_size)]
    embedded, started = 0, None
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        pending = executor.submit(prepare, batches[0])
        for index in range(len(batches)):
            inputs = pending.result()
            if index + 1 < len(batches):
                pending = executor.submit(prepare, batches[index + 1])
            embed_videos(model, inputs)
            _synchronize(device)
            if started is None:
                started = time.perf_counter()
            else:
                embedded += batch_size
    return embedded / (time.perf_counter() - started), embedded


def model_only_rate(model, processor, path: Path, batch_size: int, iterations: int) -> float:
    from clip2video.apps.search.indexer import embed_videos
    from clip2video.processing.video_processing_clip2video import stack_videos

    one = processor(videos=[str(path)], return_tensors="pt", return_timestamps=True)
    inputs = stack_videos([{key: one[key] for key in one}] * batch_size)
    embed_videos(model, inputs)  # warm-up
    _synchronize(model.device)
    started = time.perf_counter()
    for _ in range(iterations):
        embed_videos(model, inputs)
    _synchronize(model.device)
    return batch_size * iterations / (time.perf_counter() - started)


def run(
    device: str | None = None, tiny: bool = False, num_videos: int = 128, batch_size: int = 32,
    num_workers: int | None = None, seconds: int = 10,
) -> dict[str, float]:
    """Prints and returns videos/s of each path (and the clips' length and count it was measured on)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if tiny:
        num_videos, batch_size, seconds = min(num_videos, 6), min(batch_size, 2), min(seconds, 2)
    if num_workers is None:
        num_workers = max(1, min(8, len(os.sched_getaffinity(0)) - 1))
    if num_videos < 2 * batch_size:
        raise ValueError(f"--num_videos {num_videos} must be at least two batches of {batch_size} (one is warm-up).")
    results = {"clip seconds": float(seconds), "videos": float(num_videos)}
    with tempfile.TemporaryDirectory(prefix="gpu-check-indexing-") as workdir:
        workdir = Path(workdir)
        paths = write_clips(workdir / "videos", num_videos, seconds, width=320, height=240)
        model, processor = build(device, tiny, workdir / "model")
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"indexing: {name}, {num_videos} clips of {seconds} s (320x240, 30 fps H.264), batch {batch_size}, "
              f"{'tiny' if tiny else 'ViT-B/32'} sizes, weights {model.dtype}, {num_workers} decoding workers")
        with torch.inference_mode():
            rate, count = rate_with_workers(model, processor, paths, batch_size, num_workers)
            results["cpu decode videos/s"] = rate
            print(f"  cpu decode ({num_workers} workers)  {rate:8.2f} videos/s over {count} videos", flush=True)
            unavailable = torchcodec_unavailable()
            label = f"torchcodec {device.type} decode"
            if unavailable is None:
                rate, count = rate_with_torchcodec(model, processor, paths, batch_size)
                results[f"{label} videos/s"] = rate
                print(f"  {label:24s}{rate:8.2f} videos/s over {count} videos", flush=True)
            else:
                print(f"  {label:24s}skipped: {unavailable}")
            rate = model_only_rate(model, processor, paths[0], batch_size, iterations=2 if tiny else 5)
            results["model only videos/s"] = rate
            print(f"  model only (decoded)    {rate:8.2f} videos/s")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny model, 6 clips of 2 s, batch 2: a smoke check")
    parser.add_argument("--num_videos", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_workers", type=int, help="decoding workers (default: the CPUs less one, at most 8)")
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    run(args.device, args.tiny, args.num_videos, args.batch_size, args.num_workers, args.seconds)

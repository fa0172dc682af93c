"""GPU check part: serving (see gpu_check.py).

Publishes a CLIP2Video folder at the paper's size (CLIP ViT-B/32 shapes, random weights: the Hub is not needed),
loads its `handler.py` as the Hugging Face inference toolkit does, checks that the model went to CUDA in bfloat16,
then answers 20 single-video requests (base64 MP4, 10 labels) and one request of 8 videos, printing the latency of
each request, the GPU memory, and how far bfloat16 probabilities are from float32 ones on the same requests.

    PYTHONPATH=. python benchmarks/gpu_check.py --parts serving
"""

import base64
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch


LABELS = ["cooking", "playing guitar", "a dog running", "dancing", "driving a car", "swimming", "a red square",
          "typing on a keyboard", "a crowd cheering", "painting a wall"]


def write_clip(path: Path, seconds: int = 10, fps: int = 30, width: int = 320, height: int = 240) -> Path:
    """A moving-gradient H.264 clip (the decoding cost of a typical short web video)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        for index in range(seconds * fps):
            frame = np.broadcast_to((x + 4 * index) % 256, (height, width, 3)).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def publish(folder: Path) -> Path:
    from clip2video.modeling_clip2video import CLIP2VideoConfig, CLIP2VideoModel
    from clip2video.pipelines.publishing import save_publishable_checkpoint
    from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer

    torch.manual_seed(0)
    model = CLIP2VideoModel(CLIP2VideoConfig()).eval()
    processor = CLIP2VideoProcessor(video_processor=CLIP2VideoVideoProcessor(), tokenizer=offline_clip_tokenizer())
    save_publishable_checkpoint(folder, model, processor)
    return folder


def load_handler_module(folder: Path):
    """`handler.py` imported as the toolkit imports it (module `handler.EndpointHandler`, the folder on sys.path)."""
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location("handler.EndpointHandler", folder / "handler.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["handler.EndpointHandler"] = module
    spec.loader.exec_module(module)
    return module


def timed(handler, request, synchronize: bool) -> tuple[dict, float]:
    started = time.perf_counter()
    answer = handler(request)
    if synchronize:
        torch.cuda.synchronize()
    return answer, time.perf_counter() - started


def run(num_requests: int = 20) -> None:
    on_cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="gpu-check-serving-") as workdir:
        workdir = Path(workdir)
        folder = publish(workdir / "published")
        encoded = base64.b64encode(write_clip(workdir / "clip.mp4").read_bytes()).decode()
        module = load_handler_module(folder)

        started = time.perf_counter()
        handler = module.EndpointHandler(str(folder))
        print(f"handler loaded in {time.perf_counter() - started:.1f} s on {handler.device}, {handler.dtype}")
        devices = {parameter.device.type for parameter in handler.model.parameters()}
        print(f"model parameters on {sorted(devices)}, eval mode: {not handler.model.training}")
        if on_cuda:
            assert devices == {"cuda"} and handler.dtype == torch.bfloat16, (devices, handler.dtype)
            torch.cuda.reset_peak_memory_stats()

        request = {"inputs": {"video": encoded, "candidate_labels": LABELS}}
        timed(handler, request, on_cuda)  # warm-up: CUDA kernels, the tokenizer, the decoder
        latencies, answers = [], []
        for index in range(num_requests):
            answer, seconds = timed(handler, request, on_cuda)
            latencies.append(seconds)
            answers.append(answer)
            print(f"request {index + 1:2d}: {seconds * 1000:7.1f} ms")
        print(
            f"{num_requests} requests: median {statistics.median(latencies) * 1000:.1f} ms, "
            f"max {max(latencies) * 1000:.1f} ms"
        )
        batch = {"inputs": {"videos": [encoded] * 8, "candidate_labels": LABELS}}
        batch_answer, seconds = timed(handler, batch, on_cuda)
        assert all("labels" in result for result in batch_answer["results"]), batch_answer
        print(f"one request of 8 videos: {seconds * 1000:.1f} ms ({seconds * 1000 / 8:.1f} ms per video)")
        if on_cuda:
            print(
                f"GPU memory: peak allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB, "
                f"reserved {torch.cuda.memory_reserved() / 2**20:.0f} MiB"
            )

        # The same request in float32 on the same device: how far bfloat16 moves the probabilities.
        reference = module.EndpointHandler(str(folder), device=str(handler.device), dtype="float32")
        float32 = {item["label"]: item["score"] for item in reference(request)["labels"]}
        reduced = {item["label"]: item["score"] for item in answers[-1]["labels"]}
        difference = max(abs(float32[label] - reduced[label]) for label in LABELS)
        print(f"{handler.dtype} vs float32: largest probability difference {difference:.2e} (bar: 1e-2)")

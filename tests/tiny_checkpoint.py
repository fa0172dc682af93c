"""A tiny but complete CLIP2Video checkpoint folder (model, real processor with the offline CLIP tokenizer, remote
code, pipelines, endpoint handler) and tiny coloured mp4 videos, for the tests of the pipelines and apps."""

import textwrap
from pathlib import Path

import av
import numpy as np
import torch

from clip2video.modeling_clip2video import CLIP2VideoConfig, CLIP2VideoModel
from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer

IMAGE_SIZE = 32
MAX_FRAMES = 4
WIDTH = 64
# The real CLIP vocabulary: 49,406 is <|startoftext|>, 49,407 <|endoftext|>.
START, END = 49406, 49407


def tiny_config() -> CLIP2VideoConfig:
    """The paper's full model (TDB, temporal transformer, TAB) at toy size, with the real CLIP vocabulary."""
    layer = dict(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_attention_heads=1, num_hidden_layers=1)
    return CLIP2VideoConfig(
        projection_dim=WIDTH,
        text_config=dict(**layer, max_position_embeddings=77, bos_token_id=START, eos_token_id=END, pad_token_id=END),
        vision_config=dict(**layer, image_size=IMAGE_SIZE, patch_size=16),
        temporal_num_layers=1,
        num_frames=MAX_FRAMES,
    )


def tiny_processor() -> CLIP2VideoProcessor:
    video_processor = CLIP2VideoVideoProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, max_frames=MAX_FRAMES
    )
    return CLIP2VideoProcessor(video_processor=video_processor, tokenizer=offline_clip_tokenizer())


def save_tiny_checkpoint(folder: Path, with_apps: bool = True, seed: int = 0) -> Path:
    """Saves a randomly initialised tiny model and its processor to `folder`; with `with_apps`, also the pipelines
    and the endpoint handler, as the publishing path does."""
    torch.manual_seed(seed)
    CLIP2VideoModel(tiny_config()).eval().save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    if with_apps:
        from clip2video.pipelines.publishing import add_pipelines_and_handler

        add_pipelines_and_handler(folder)
    return Path(folder)


def write_video(path: Path, colour=(255, 0, 0), num_frames: int = 20, fps: int = 10, size: int = 48, moving=True):
    """An mp4 (H.264) of a `colour` square on grey, sliding right over the frames when `moving`."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(num_frames):
            frame = np.full((size, size, 3), 128, np.uint8)
            left = (index * (size // 2)) // max(num_frames - 1, 1) if moving else size // 4
            frame[size // 4 : 3 * size // 4, left : left + size // 2] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


COLOURS = {"red": (230, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 230), "yellow": (240, 220, 20)}


def write_videos(folder: Path, **kwargs) -> dict[str, str]:
    """One short video per colour of `COLOURS`, named after it."""
    folder.mkdir(parents=True, exist_ok=True)
    return {name: write_video(folder / f"{name}.mp4", colour, **kwargs) for name, colour in COLOURS.items()}


def run_without_repo(code: str, cwd: Path, timeout: int = 300):
    """`tiny_models.run_isolated`, with this repository's apps and pipelines packages blocked too."""
    from tiny_models import run_isolated

    block = "import sys\nsys.modules['pipelines'] = None\nsys.modules['apps'] = None\n"
    return run_isolated(block + textwrap.dedent(code), cwd=cwd, timeout=timeout)

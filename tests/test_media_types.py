"""`processing/media_types_clip2video.py`: the video and frame-image file endings are read without the processor's
dependencies, in a fresh interpreter (the search index and dataset folders scan folders with them)."""

import subprocess
import sys

from tests.helpers.processes import REPO

CHECK = """
import sys
from clip2video.processing.media_types_clip2video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
loaded = sorted(name for name in ("torch", "torchvision", "numpy", "transformers", "av") if name in sys.modules)
print(loaded, ".mp4" in VIDEO_EXTENSIONS, ".png" in IMAGE_EXTENSIONS)
"""


def test_the_extensions_are_read_without_torch_numpy_or_transformers():
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "True", "True"], result.stdout


def test_the_package_still_exports_the_processors_when_asked():
    # `clip2video.processing` imports its classes on first use (so that the line above stays light).
    from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer
    from clip2video.processing.video_processing_clip2video import CLIP2VideoVideoProcessor as defined

    assert CLIP2VideoVideoProcessor is defined
    assert CLIP2VideoProcessor.__name__ == "CLIP2VideoProcessor" and callable(offline_clip_tokenizer)

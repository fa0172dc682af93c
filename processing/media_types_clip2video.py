"""Which files are videos and which are frame images, by their ending.

Standard library only (no torch, no numpy): folder scanners (the search index, dataset folders) read these constants
without loading the processor's dependencies.
"""

# A string with one of these endings is a frame image, not a video: a list of them is one video.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# The files that folders of videos are read for (search indexes, dataset folders): containers FFmpeg demuxes.
VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".ogv",
)

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS"]

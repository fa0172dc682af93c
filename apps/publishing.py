"""Kept for old imports: the publishing helper lives in `clip2video.pipelines.publishing`."""

from clip2video.pipelines.publishing import ENDPOINT_DIR, add_pipelines_and_handler

__all__ = ["ENDPOINT_DIR", "add_pipelines_and_handler"]

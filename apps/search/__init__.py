"""Text search over a video collection: `index_videos` builds the index, `query_videos` searches it."""

from .video_index import SearchHit, VideoIndex


__all__ = ["SearchHit", "VideoIndex"]

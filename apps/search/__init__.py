"""Text search over a video collection: `index_videos` builds the index, `query_videos` searches it, `VideoIndex`
opens one from Python."""

from .video_index import IndexDamagedError, ModelMismatchError, SearchHit, SearchParameters, VideoIndex


__all__ = ["IndexDamagedError", "ModelMismatchError", "SearchHit", "SearchParameters", "VideoIndex"]

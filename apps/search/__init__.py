"""Text search over a video collection: `index_videos` builds the index (from Python: `indexer.VideoIndexer`, not
imported here: it needs torch, a search does not), `query_videos` searches it, `VideoIndex` opens one from Python."""

from .video_index import IndexDamagedError, ModelMismatchError, SearchHit, SearchParameters, VideoIndex


__all__ = ["IndexDamagedError", "ModelMismatchError", "SearchHit", "SearchParameters", "VideoIndex"]

"""A video index kept in Milvus: the same search as `VideoIndex` (scores, best moments, model check), stored in a
Milvus collection instead of files, so that it grows past one machine (`pip install "clip2video[milvus]"`).

    python -m clip2video.apps.search.index_videos --store milvus --milvus_uri videos.db --model my-clip2video \\
        --videos /data/my_videos --index_dir my_staging
    python -m clip2video.apps.search.query_videos --store milvus --milvus_uri videos.db "a dog" --filter 'path like "dogs/%"'

`--milvus_uri` is a local file (Milvus Lite, embedded: one process at a time) or a server / cluster URL
(`http://host:19530`); a token is read from the environment variable `MILVUS_TOKEN` only, never from the command line.

The collection (default `clip2video_videos`) holds one row per video:

    path          VARCHAR, primary key     the video relative to the indexed folder: one row per video by construction
    size          INT64                    with mtime_ns: the video's key, checked against the file on every run
    mtime_ns      INT64
    frame_count   INT32                    frames sampled
    embedding     FLOAT_VECTOR(dim)        the retrieval embedding (`pooler_output`), inner-product index
    frames        FLOAT_VECTOR(F x P)      the normalised frame embeddings, float16-rounded as the file index stores
                                           them, zero-padded to the processor's `num_frames` F
    frame_times   ARRAY<DOUBLE>            seconds of each sampled frame

Everything of a video is in one row, so one upsert makes a video searchable with its best moments, or leaves it as
it was: there is no second collection to keep in step. The model fingerprint, widths, logit scale and the indexed
folder are the collection property `clip2video.index` (set when the collection is created), checked on every
query and indexing run. Scores are re-computed exactly from the stored float32 embeddings with the file index's own
`exact_top_k` (the Milvus index only proposes candidates), ties by path as in the file index.
"""

import contextlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from .video_index import (
    SearchHit, SearchParameters, VideoIndex, best_moment, check_positive_integer, exact_top_k, unit_moment_embeddings,
)


TOKEN_VARIABLE = "MILVUS_TOKEN"
DEFAULT_COLLECTION = "clip2video_videos"
PROPERTY = "clip2video.index"
MILVUS_INDEX_TYPES = ("auto", "FLAT", "IVF_FLAT", "HNSW")
FILTER_FIELDS = ("path", "size", "mtime_ns", "frame_count")
_MAX_PATH = 4096
_MAX_FILTER = 4096
_UPSERT_ROWS = 128  # ~30 KB a row with frames: well under gRPC's 64 MB message
_FETCH_ROWS = 1024
_SEARCH_LIMIT = 16_384  # Milvus' largest topk
_COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_AUTH_FAILURE = re.compile(
    r"auth|credential|permission denied|unauthenticated|(invalid|wrong|bad|expired) token|token (is )?(invalid|expired)",
    re.IGNORECASE,
)


class MilvusStoreError(RuntimeError):
    """Milvus cannot be used as asked; the message names the URI, collection or filter and what to do."""


@dataclass
class MilvusOptions:
    """Where and how the indexer stores an index in Milvus. `uri`: a Milvus Lite file or a server URL (the token
    comes from the environment variable `MILVUS_TOKEN`); `collection`: its name; `index_type`: the index Milvus
    builds over the embeddings (auto: FLAT for a Milvus Lite file, HNSW for a server; its settings are the
    indexer's `VectorIndexOptions`: `hnsw_m`, `ef_search`, `nlist`, `nprobe`); `timeout`: seconds per call."""

    uri: str
    collection: str = DEFAULT_COLLECTION
    index_type: str = "auto"
    timeout: float = 10.0


def add_store_arguments(parser) -> None:
    """`--store`, `--milvus_uri`, `--milvus_collection`, shared by `index_videos` and `query_videos`."""
    parser.add_argument(
        "--store", choices=("file", "milvus"), default="file",
        help="file: the index folder (default); milvus: a Milvus collection (pip install 'clip2video[milvus]')",
    )
    parser.add_argument(
        "--milvus_uri", default=None,
        help=f"with --store milvus: a Milvus Lite file (e.g. videos.db) or a server URL (http://host:19530); a token "
        f"is read from the environment variable {TOKEN_VARIABLE}",
    )
    parser.add_argument("--milvus_collection", default=DEFAULT_COLLECTION, help="with --store milvus: the collection")


def is_local(uri: str) -> bool:
    """A Milvus Lite file rather than a server."""
    return "://" not in uri


def shown_uri(uri: str) -> str:
    """The URI without any user:password part, for messages."""
    if is_local(uri):
        return uri
    parts = urlsplit(uri)
    return parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()


@contextlib.contextmanager
def _quiet():
    """pymilvus logs every failed call with its own traceback before raising: our error says it instead."""
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict) if name.startswith("pymilvus")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _reason(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return " ".join(str(message).split())


def _call(what: str, function, *args, **kwargs):
    """A pymilvus call whose failure becomes a `MilvusStoreError` naming `what` and Milvus' reason."""
    with _quiet():
        try:
            return function(*args, **kwargs)
        except MilvusStoreError:
            raise
        except Exception as error:  # pymilvus raises MilvusException and its subclasses, grpc errors, ValueError
            reason = _reason(error)
            if _AUTH_FAILURE.search(reason):
                reason += f" (the token comes from the environment variable {TOKEN_VARIABLE})"
            raise MilvusStoreError(f"{what} failed: {reason}") from None


def _refused_credentials(error: BaseException) -> str | None:
    """What the server said if a gRPC error in `error`'s chain refused the credentials (UNAUTHENTICATED or
    PERMISSION_DENIED), else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        code = getattr(error, "code", None)
        name = getattr(code(), "name", None) if callable(code) else None
        if name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            details = error.details() if callable(getattr(error, "details", None)) else None
            return " ".join(str(details or name).split())
        error = error.__cause__ or error.__context__
    return None


def connect(uri: str, timeout: float = 10.0):
    """A `pymilvus.MilvusClient` for `uri` (a Milvus Lite file or a server URL), token from `MILVUS_TOKEN`."""
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise MilvusStoreError(
            'The Milvus store needs pymilvus: pip install "clip2video[milvus]" (Milvus Lite included).'
        ) from None
    if not isinstance(uri, str) or not uri:
        raise MilvusStoreError("--milvus_uri must be a Milvus Lite file (e.g. videos.db) or a server URL.")
    if is_local(uri):
        folder = Path(uri).resolve().parent
        if not folder.is_dir():
            raise MilvusStoreError(f"Milvus Lite file {uri}: its folder {folder} does not exist.")
    token = os.environ.get(TOKEN_VARIABLE, "")
    with _quiet():
        try:
            client = MilvusClient(uri=uri, token=token, timeout=timeout)
            client.list_collections()  # a server that accepts connections but not the token fails here
        except Exception as error:  # see _call
            reason = _reason(error)
            if is_local(uri) and "open local milvus failed" in reason.lower():
                reason = (
                    "the file is open in another process (Milvus Lite serves one process at a time: wait for it, or "
                    "use a Milvus server) or is not a Milvus Lite database"
                )
            elif _refused_credentials(error):
                # pymilvus reports a refused token as "illegal connection params or server unavailable"; the
                # server's own answer (gRPC UNAUTHENTICATED / PERMISSION_DENIED) is the error's cause.
                reason = (
                    f"the server refused the credentials ({_refused_credentials(error)}): check the token in the "
                    f"environment variable {TOKEN_VARIABLE}"
                )
            elif _AUTH_FAILURE.search(reason):
                reason += f" (check the token in the environment variable {TOKEN_VARIABLE})"
            raise MilvusStoreError(f"Cannot use Milvus at {shown_uri(uri)}: {reason}") from None
    return client


def disconnect(client, uri: str) -> None:
    """Closes `client`; for a Milvus Lite file, also stops this process's embedded server, which holds the file's
    lock until then (closing the client alone keeps it for the life of the process)."""
    client.close()
    if is_local(uri):
        try:
            from milvus_lite.server_manager import server_manager_instance
        except ImportError:  # an older Milvus Lite, whose server lives in its own process
            return
        server_manager_instance.release_server(uri)


def check_collection_name(name: str) -> str:
    if not isinstance(name, str) or not _COLLECTION_NAME.fullmatch(name):
        raise MilvusStoreError(
            f"--milvus_collection {name!r} is not a Milvus collection name (a letter or _, then letters, digits, _)."
        )
    return name


def check_filter(expression: str | None) -> str:
    """The filter as Milvus reads it, after the checks Milvus cannot make for us (its parser checks the rest)."""
    if expression is None or expression == "":
        return ""
    if not isinstance(expression, str) or len(expression) > _MAX_FILTER or "\x00" in expression:
        raise ValueError(f"--filter must be a Milvus boolean expression of at most {_MAX_FILTER} characters.")
    return expression


class MilvusVideoIndex:
    """A Milvus collection written by `index_videos --store milvus`, opened for search: the API of `VideoIndex`
    (`search`, `nearest`, `check_model`, `describe_search`, `logit_scale`, `video_root`, `metadata`).

    Args:
        uri: a Milvus Lite file or a server URL; the token comes from the environment variable `MILVUS_TOKEN`.
        collection: the collection's name.
        timeout: seconds for each call to Milvus.

    Raises:
        MilvusStoreError: Milvus is unreachable, refuses the token, or the collection is missing, was not written
            by the indexer, or does not hold what its properties say (e.g. vectors of another width).
    """

    def __init__(self, uri: str, collection: str = DEFAULT_COLLECTION, timeout: float = 10.0, client=None):
        self.uri, self.collection = uri, check_collection_name(collection)
        self.client = client or connect(uri, timeout)
        self.index_dir = f"Milvus collection {collection!r} at {shown_uri(uri)}"  # how messages name this index
        if not _call(f"Listing the collections of {shown_uri(uri)}", self.client.has_collection, collection):
            raise MilvusStoreError(
                f"{self.index_dir} does not exist: build it with index_videos --store milvus."
            )
        description = _call(f"Describing {self.index_dir}", self.client.describe_collection, collection)
        self.metadata = read_properties(description, self.index_dir)
        _call(f"Loading {self.index_dir}", self.client.load_collection, collection)

    def close(self) -> None:
        """Closes the connection; a Milvus Lite file is then free for another process."""
        disconnect(self.client, self.uri)

    # -- properties, as VideoIndex -----------------------------------------------------------------------------

    def __len__(self) -> int:
        rows = _call(
            f"Counting {self.index_dir}", self.client.query, self.collection, filter="", output_fields=["count(*)"]
        )
        return int(rows[0]["count(*)"])

    # The same metadata as the file index, read the same way.
    video_root = VideoIndex.video_root
    logit_scale = VideoIndex.logit_scale
    index_type = VideoIndex.index_type
    check_model = VideoIndex.check_model

    def describe_search(self, parameters: SearchParameters | None = None) -> str:
        parameters = parameters or SearchParameters()
        settings = self.metadata["vector_index"]
        if settings["type"] == "FLAT":
            return f"exact search (Milvus FLAT) of {self.index_dir} (recall 1)"
        return (
            f"Milvus {settings['type']} search of {self.index_dir} ({parameters.candidates} candidates re-scored "
            "exactly); recall not measured by the indexer: compare with a FLAT collection (benchmark_search.py)"
        )

    # -- search ---------------------------------------------------------------------------------------------------

    def nearest(
        self, text_embeddings: np.ndarray, k: int, parameters: SearchParameters | None = None
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Scores (`logits_per_text`) and paths of the `k` best videos for each text, best first, ties by path."""
        parameters = parameters or SearchParameters()
        if parameters.exact and self.index_type != "FLAT":
            raise ValueError(
                f"{self.index_dir} has a {self.index_type} index: an exact search needs a FLAT collection "
                "(index_videos --store milvus --milvus_index FLAT into another --milvus_collection)."
            )
        queries = VideoIndex._check_queries(self, text_embeddings)
        check_positive_integer(k, "k")
        check_positive_integer(parameters.candidates, "candidates")
        expression = check_filter(parameters.filter)
        if expression:
            try:
                _call("", self.client.query, self.collection, filter=expression, limit=1, output_fields=["path"])
            except MilvusStoreError as error:
                raise ValueError(
                    f"--filter {expression!r} is not a valid Milvus boolean expression over the fields "
                    f"{', '.join(FILTER_FIELDS)} of {self.index_dir}: {str(error).removeprefix(' failed: ')}"
                ) from None
        limit = min(max(k, parameters.candidates), _SEARCH_LIMIT)
        found = _call(
            f"Searching {self.index_dir}" + (f" with the filter {expression!r}" if expression else ""),
            self.client.search, self.collection, data=queries.tolist(), limit=limit, filter=expression,
            anns_field="embedding", output_fields=["path"], search_params=self._search_params(parameters),
        )
        candidates = [sorted({hit["entity"]["path"] for hit in hits}) for hits in found]
        embeddings = self._fetch(sorted({path for paths in candidates for path in paths}), ["embedding"])
        scores = np.full((len(queries), k), -np.inf, np.float32)
        paths: list[list[str]] = []
        for line, names in enumerate(candidates):
            if not names:
                paths.append([])
                continue
            stored = np.array([embeddings[name]["embedding"] for name in names], np.float32)
            inner, rows = exact_top_k(stored, queries[line : line + 1], k)
            scores[line, : rows.shape[1]] = self.logit_scale * inner[0]
            paths.append([names[row] for row in rows[0]])
        width = max((len(p) for p in paths), default=0)
        return scores[:, :width], paths

    def search(
        self,
        text_embeddings: np.ndarray,
        k: int = 10,
        moment_embeddings: np.ndarray | None = None,
        parameters: SearchParameters | None = None,
    ) -> list[list[SearchHit]] | list[SearchHit]:
        """As `VideoIndex.search`; `parameters.filter` restricts the search to the rows it selects."""
        single = np.ndim(text_embeddings) == 1
        scores, paths = self.nearest(np.atleast_2d(text_embeddings), k, parameters)
        projection_dim = self.metadata["projection_dim"]
        moments = unit_moment_embeddings(moment_embeddings, len(paths), projection_dim)
        if moments is not None:
            rows = self._fetch(sorted({p for line in paths for p in line}), ["frames", "frame_count", "frame_times"])
        results = []
        for line, names in enumerate(paths):
            hits = []
            for score, name in zip(scores[line], names):
                seconds = similarity = float("nan")
                if moments is not None:
                    count = int(rows[name]["frame_count"])
                    frames = np.asarray(rows[name]["frames"], np.float32).reshape(-1, projection_dim)[:count]
                    seconds, similarity = best_moment(frames, rows[name]["frame_times"], moments[line])
                hits.append(SearchHit(name, float(score), seconds, similarity))
            results.append(hits)
        return results[0] if single else results

    def _search_params(self, parameters: SearchParameters) -> dict:
        settings = self.metadata["vector_index"]
        params = {}
        if settings["type"] == "HNSW":
            params["ef"] = max(parameters.ef_search or settings.get("ef_search", 256), parameters.candidates)
        elif settings["type"] == "IVF_FLAT":
            params["nprobe"] = parameters.nprobe or settings.get("nprobe", 32)
        return {"metric_type": "IP", "params": params}

    def _fetch(self, paths: list[str], fields: list[str]) -> dict[str, dict]:
        rows = {}
        for start in range(0, len(paths), _FETCH_ROWS):
            batch = paths[start : start + _FETCH_ROWS]
            for row in _call(f"Reading {self.index_dir}", self.client.get, self.collection, ids=batch,
                             output_fields=fields):
                rows[row["path"]] = row
        missing = [p for p in paths if p not in rows]
        if missing:  # deleted between the search and the read (another indexer's run): never a made-up hit
            raise MilvusStoreError(f"{self.index_dir} changed during the search ({missing[0]!r} vanished); search again.")
        return rows


def read_properties(description: dict, name: str) -> dict:
    """The collection's `clip2video.index` property, checked against its schema."""
    raw = (description.get("properties") or {}).get(PROPERTY)
    if raw is None:
        raise MilvusStoreError(
            f"{name} was not written by clip2video's indexer (no {PROPERTY!r} property): choose another "
            "--milvus_collection; the indexer never writes into a collection it did not create."
        )
    try:
        metadata = json.loads(raw)
        fields = {field["name"]: field for field in description["fields"]}
        dims = {key: int(fields[key]["params"]["dim"]) for key in ("embedding", "frames")}
        assert isinstance(metadata["model"]["hash"], str) and isinstance(metadata["model"]["name"], str)
        expected = {
            "embedding": metadata["embedding_dim"], "frames": metadata["num_frames"] * metadata["projection_dim"]
        }
    except Exception as error:  # any malformed property or schema
        raise MilvusStoreError(f"{name} has an unreadable {PROPERTY!r} property or schema ({_reason(error)}).") from None
    for key, dim in dims.items():
        if dim != expected[key]:
            raise MilvusStoreError(
                f"{name} stores {key} vectors of {dim} values, its {PROPERTY!r} property says {expected[key]}: "
                "it was changed by hand; index into a new --milvus_collection."
            )
    return metadata


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------


class MilvusIndexWriter:
    """The indexer's side: creates the collection (or checks the existing one against the model), says which videos
    are already stored, and upserts the parts of a run.

    `stored_keys()` and `commit()` are called by the main process only: Milvus Lite serves one process, so the other
    `accelerate` processes write their parts to the staging folder (`--index_dir`) as with the file index, and the
    main process upserts them. A kill at any moment loses nothing: parts are removed only after their rows are
    upserted, and upserting a part again is harmless (the primary key is the path)."""

    def __init__(self, options: MilvusOptions, spec, num_frames: int, vector_index, rebuild: bool = False):
        """`spec`: the index's `index_build.IndexSpec` (model, logit scale, widths, folder); `num_frames`: the
        processor's (frames stored per video); `vector_index`: the indexer's `VectorIndexOptions`, whose HNSW and IVF
        settings the Milvus index takes; `rebuild`: drop a collection of another model instead of refusing."""
        uri, collection, index_type = options.uri, options.collection, options.index_type
        self.client = connect(uri, options.timeout)
        self.collection = check_collection_name(collection)
        self.name = f"Milvus collection {collection!r} at {shown_uri(uri)}"
        if index_type == "auto":
            index_type = "FLAT" if is_local(uri) else "HNSW"
        settings = {"type": index_type}
        if index_type == "HNSW":
            settings.update(m=vector_index.hnsw_m, ef_construction=200, ef_search=vector_index.ef_search)
        elif index_type == "IVF_FLAT":
            settings.update(nlist=vector_index.nlist or 1024, nprobe=vector_index.nprobe or 32)
        fingerprint, embedding_dim = spec.model, spec.embedding_dim
        self.metadata = {
            "format": 1, "model": fingerprint, "logit_scale": float(spec.logit_scale),
            "embedding_dim": int(embedding_dim), "projection_dim": int(spec.projection_dim),
            "num_frames": int(num_frames), "video_root": str(spec.video_root), "vector_index": settings,
        }
        exists = _call(f"Listing the collections of {shown_uri(uri)}", self.client.has_collection, collection)
        if exists:
            stored = read_properties(
                _call(f"Describing {self.name}", self.client.describe_collection, collection), self.name
            )
            if stored["model"]["hash"] != fingerprint["hash"] or any(
                stored[key] != self.metadata[key] for key in ("embedding_dim", "projection_dim", "num_frames")
            ):
                if not rebuild:
                    raise SystemExit(
                        f"{self.name} was built with the model {stored['model']['name']!r} (fingerprint "
                        f"{stored['model']['hash'][:12]}, {stored['embedding_dim']}-dimensional), not with "
                        f"{fingerprint['name']!r} (fingerprint {fingerprint['hash'][:12]}, {embedding_dim}-dimensional):"
                        " pass --rebuild to drop it and index the videos again with this model, or choose another "
                        "--milvus_collection."
                    )
                _call(f"Dropping {self.name}", self.client.drop_collection, collection)
                exists = False
            else:
                self.metadata = stored
        if not exists:
            self._create()
        _call(f"Loading {self.name}", self.client.load_collection, collection)

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        metadata = self.metadata
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("path", DataType.VARCHAR, is_primary=True, max_length=_MAX_PATH)
        schema.add_field("size", DataType.INT64)
        schema.add_field("mtime_ns", DataType.INT64)
        schema.add_field("frame_count", DataType.INT32)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=metadata["embedding_dim"])
        schema.add_field("frames", DataType.FLOAT_VECTOR, dim=metadata["num_frames"] * metadata["projection_dim"])
        schema.add_field(
            "frame_times", DataType.ARRAY, element_type=DataType.DOUBLE, max_capacity=max(metadata["num_frames"], 1)
        )
        settings = metadata["vector_index"]
        params = {
            "HNSW": {"M": settings.get("m"), "efConstruction": settings.get("ef_construction")},
            "IVF_FLAT": {"nlist": settings.get("nlist")},
        }.get(settings["type"], {})
        index_params = MilvusClient.prepare_index_params()
        index_params.add_index("embedding", index_type=settings["type"], metric_type="IP", params=params)
        # Milvus loads only indexed vector fields; the frames are read by key, never searched.
        index_params.add_index("frames", index_type="FLAT", metric_type="IP")
        try:
            _call(
                f"Creating {self.name}", self.client.create_collection, self.collection, schema=schema,
                index_params=index_params, consistency_level="Strong", properties={PROPERTY: json.dumps(metadata)},
            )
        except MilvusStoreError as error:
            if "already exist" not in str(error):
                raise
            # Another indexer created it meanwhile: use it if it is the same model's.
            stored = read_properties(self.client.describe_collection(self.collection), self.name)
            if stored["model"]["hash"] != metadata["model"]["hash"]:
                raise
            self.metadata = stored

    def stored_keys(self) -> dict[str, tuple[str, int, int]]:
        """{path: (path, size, mtime_ns)} of every stored video."""
        keys = {}
        with _quiet():
            try:
                iterator = self.client.query_iterator(
                    self.collection, batch_size=8192, filter="", output_fields=["path", "size", "mtime_ns"]
                )
                while batch := iterator.next():
                    for row in batch:
                        keys[row["path"]] = (row["path"], int(row["size"]), int(row["mtime_ns"]))
                iterator.close()
            except Exception as error:  # see _call
                raise MilvusStoreError(f"Reading the keys of {self.name} failed: {_reason(error)}") from None
        return keys

    def upsert(self, part) -> None:
        """Writes the videos of a part (`index_build.LoadedPart`), replacing the rows of the same paths."""
        projection_dim, num_frames = self.metadata["projection_dim"], self.metadata["num_frames"]
        width = num_frames * projection_dim
        rows = []
        for row, path in enumerate(part.paths):
            begin, end = int(part.frame_offsets[row]), int(part.frame_offsets[row + 1])
            if end - begin > num_frames:
                raise MilvusStoreError(
                    f"{path} has {end - begin} frames, {self.name} holds at most {num_frames} per video (the "
                    "processor's num_frames when it was created)."
                )
            frames = np.zeros(width, np.float32)
            # float16-rounded, as the file index stores frames: the same best moments and similarities.
            frames[: (end - begin) * projection_dim] = part.frames[begin:end].astype(np.float16).reshape(-1)
            rows.append({
                "path": path, "size": int(part.sizes[row]), "mtime_ns": int(part.mtimes_ns[row]),
                "frame_count": end - begin, "embedding": np.asarray(part.embeddings[row], np.float32).tolist(),
                "frames": frames.tolist(), "frame_times": [float(t) for t in part.frame_times[begin:end]],
            })
        for start in range(0, len(rows), _UPSERT_ROWS):
            _call(f"Writing to {self.name}", self.client.upsert, self.collection, rows[start : start + _UPSERT_ROWS])

    def flush(self) -> None:
        """Seals the rows written so far into segments that Milvus indexes: searches of growing segments are brute
        force (Milvus Lite: 20x slower at 5,000 videos, measured)."""
        _call(f"Flushing {self.name}", self.client.flush, self.collection)

    def commit(self, parts_dir: Path, parts, root: Path) -> dict:
        """Upserts every video of `parts` (oldest first: later parts win), removes each part once its rows are in,
        then deletes the rows of videos that vanished or changed on disk. Returns a summary shaped like the file
        index's metadata."""
        from .index_build import file_key

        for part in parts:
            self.upsert(part)
            (parts_dir / part.name).unlink(missing_ok=True)
        stale = []
        for path, key in self.stored_keys().items():
            try:
                current = file_key(root / path, root) if (root / path).is_file() else None
            except OSError:
                current = None
            if current != key:
                stale.append(path)
        for start in range(0, len(stale), _FETCH_ROWS):
            _call(f"Deleting vanished videos from {self.name}", self.client.delete, self.collection,
                  ids=stale[start : start + _FETCH_ROWS])
        self.flush()
        count = _call(f"Counting {self.name}", self.client.query, self.collection, filter="",
                      output_fields=["count(*)"])[0]["count(*)"]
        settings = dict(self.metadata["vector_index"])
        if settings["type"] == "FLAT":
            settings["measured_recall_at_10"] = 1.0
        return {"num_videos": int(count), "vector_index": settings, "embedding_dtype": "float32", "removed": len(stale)}

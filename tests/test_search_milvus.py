"""The Milvus store of `apps/search` (`milvus_store.py`) on Milvus Lite, a real engine in a local file: the same
results as the file index, the model check, filters, resumption after kill -9, several indexing processes, and clear
errors for bad inputs. Milvus Lite serves one process at a time: the tests close their client before a subprocess
opens the same file."""

import json
import shutil

import numpy as np
import pytest

from clip2video.apps.search import SearchParameters, VideoIndex
from clip2video.apps.search.query_videos import main as query_main
from clip2video.apps.search.query_videos import search_texts
from clip2video.apps.search.video_index import ModelMismatchError
from clip2video.modeling_clip2video import CLIP2VideoModel
from tests.helpers import search_fixtures
from tests.helpers.models import tiny_processor
from tests.helpers.processes import accelerate_launch
from tests.helpers.search_fixtures import write_search_videos
from tests.helpers.videos import COLOURS, write_square_video


pytest.importorskip("pymilvus", reason="the Milvus store needs pymilvus[milvus-lite]: pip install 'clip2video[milvus]'")
pytest.importorskip("milvus_lite", reason="Milvus Lite (pip install 'pymilvus[milvus-lite]') runs the Milvus tests")

from clip2video.apps.search.milvus_store import (  # noqa: E402
    PROPERTY, MilvusStoreError, MilvusVideoIndex, connect, disconnect,
)


QUERIES = ["a red square slides to the right", "green", "a blue box on grey", "a dog barks"]
pytestmark = pytest.mark.slow


def run_indexer(*args, launch=None, check=True, prelude=""):
    return search_fixtures.run_indexer(*args, launch=launch, check=check, prelude=prelude, env={"OMP_NUM_THREADS": "1"})


def milvus_args(uri, staging, *more):
    return ("--store", "milvus", "--milvus_uri", uri, "--index_dir", staging, "--num_workers", 0, *more)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_checkpoint):
    """The same videos indexed into a file index and into Milvus Lite."""
    folder = tmp_path_factory.mktemp("milvus")
    videos = folder / "videos"
    write_search_videos(videos)
    run_indexer("--model", tiny_checkpoint, "--videos", videos, "--index_dir", folder / "index", "--num_workers", 0)
    output = run_indexer(
        "--model", tiny_checkpoint, "--videos", videos, *milvus_args(folder / "videos.db", folder / "staging"),
        "--batch_size", 2, "--save_every", 2,
    ).stdout
    return folder, tiny_checkpoint, videos, output


def rows_of(uri, collection="clip2video_videos"):
    client = connect(str(uri))
    try:
        client.load_collection(collection)
        return client.query(collection, filter="", output_fields=["path", "size", "mtime_ns"], limit=1000)
    finally:
        disconnect(client, str(uri))


def test_milvus_gives_the_file_index_top_k_scores_and_moments(indexed):
    folder, checkpoint, videos, output = indexed
    assert "Indexed 5 videos into Milvus collection 'clip2video_videos'" in output and "nested/broken.mp4" in output
    # The staging folder keeps no embedding once the rows are in Milvus.
    assert list((folder / "staging" / "parts").glob("part-*")) == []
    model, processor = CLIP2VideoModel.from_pretrained(checkpoint).eval(), tiny_processor()
    files = VideoIndex(folder / "index")
    milvus = MilvusVideoIndex(str(folder / "videos.db"))
    try:
        assert len(milvus) == 5 and milvus.metadata["model"]["hash"] == files.metadata["model"]["hash"]
        for k in (1, 3, 10):
            expected = search_texts(files, model, processor, QUERIES, top_k=k)
            found = search_texts(milvus, model, processor, QUERIES, top_k=k)
            for want, got in zip(expected, found):
                assert [hit.path for hit in got] == [hit.path for hit in want]
                np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=1e-4, atol=1e-6)
                assert [h.moment_seconds for h in got] == [h.moment_seconds for h in want]
                np.testing.assert_allclose(
                    [h.moment_similarity for h in got], [h.moment_similarity for h in want], rtol=0, atol=1e-6
                )
        # The filter restricts the ranking to the rows it selects, in the file index's order.
        nested = search_texts(
            milvus, model, processor, QUERIES, top_k=10, parameters=SearchParameters(filter='path like "nested/%"')
        )
        for want, got in zip(search_texts(files, model, processor, QUERIES, top_k=10), nested):
            assert [h.path for h in got] == [h.path for h in want if h.path.startswith("nested/")]
        sized = search_texts(
            milvus, model, processor, QUERIES[:1], top_k=10, parameters=SearchParameters(filter="frame_count <= 2")
        )[0]
        short = [p for p, count in zip(files.paths, files.table.column("frame_count").to_pylist()) if count <= 2]
        assert sorted(h.path for h in sized) == sorted(short) and short
        # Another model is refused, naming both.
        other = CLIP2VideoModel.from_pretrained(checkpoint).eval()
        with __import__("torch").no_grad():
            other.logit_scale.add_(0.5)
        with pytest.raises(ModelMismatchError, match=r"was built with the model .* not with .*--force"):
            search_texts(milvus, other, processor, QUERIES, top_k=3)
        # A malformed filter is named, never a pymilvus traceback.
        with pytest.raises(ValueError, match=r"--filter 'path >>> 1' is not a valid Milvus boolean expression"):
            milvus.search(np.ones(milvus.metadata["embedding_dim"], np.float32), 3,
                          parameters=SearchParameters(filter="path >>> 1"))
    finally:
        milvus.close()


def test_query_videos_prints_the_milvus_results_and_clear_errors(indexed, capsys):
    folder, _, _, _ = indexed
    query_main(["--index_dir", str(folder / "index"), "--json", *QUERIES])
    files = json.loads(capsys.readouterr().out)
    query_main(["--store", "milvus", "--milvus_uri", str(folder / "videos.db"), "--json", *QUERIES])
    milvus = json.loads(capsys.readouterr().out)
    assert [[h["path"] for h in q["hits"]] for q in milvus] == [[h["path"] for h in q["hits"]] for q in files]
    assert milvus[0]["search"].startswith("exact search (Milvus FLAT)") and "(recall 1)" in files[0]["search"]
    bad = [
        (["--milvus_uri", "http://someone:secret@127.0.0.1:1"], r"Cannot use Milvus at http://127\.0\.0\.1:1: "),
        (["--milvus_uri", str(folder / "no-such-folder" / "x.db")], r"its folder .*no-such-folder does not exist"),
        (["--milvus_uri", str(folder / "videos.db"), "--milvus_collection", "nothing_here"], r"'nothing_here' .* does "
         r"not exist: build it"),
        (["--milvus_uri", str(folder / "videos.db"), "--milvus_collection", "bad-name;"], r"not a Milvus collection"),
        (["--milvus_uri", str(folder / "videos.db"), "--filter", 'path like "x'], r"--filter 'path like \"x' is not a "
         r"valid Milvus boolean expression over the fields path, size, mtime_ns, frame_count"),
    ]
    for arguments, message in bad:
        with pytest.raises(SystemExit, match=message) as refused:
            query_main(["--store", "milvus", *arguments, "red"])
        assert "secret" not in str(refused.value)
        assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--filter needs --store milvus"):
        query_main(["--index_dir", str(folder / "index"), "--filter", "size > 0", "red"])
    disconnect(connect(str(folder / "videos.db")), str(folder / "videos.db"))  # free the file for other processes


def test_a_collection_not_written_by_the_indexer_or_of_another_width_is_refused(tmp_path):
    from pymilvus import DataType, MilvusClient

    uri = str(tmp_path / "other.db")
    client = connect(uri)
    for name, properties, dim in (("foreign", {}, 8), ("narrow", None, 8)):
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("path", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("frames", DataType.FLOAT_VECTOR, dim=dim)
        index = MilvusClient.prepare_index_params()
        index.add_index("embedding", index_type="FLAT", metric_type="IP")
        index.add_index("frames", index_type="FLAT", metric_type="IP")
        if properties is None:  # the indexer's property, but vectors of another width than it says
            properties = {PROPERTY: json.dumps({
                "model": {"name": "m", "hash": "0" * 32}, "embedding_dim": 16, "projection_dim": 8, "num_frames": 2,
                "logit_scale": 100.0, "video_root": "/videos", "vector_index": {"type": "FLAT"},
            })}
        client.create_collection(name, schema=schema, index_params=index, properties=properties)
    disconnect(client, uri)
    with pytest.raises(MilvusStoreError, match=r"'foreign' .* was not written by clip2video's indexer"):
        MilvusVideoIndex(uri, "foreign")
    with pytest.raises(MilvusStoreError, match=r"'narrow' .* stores embedding vectors of 8 values, .* says 16"):
        MilvusVideoIndex(uri, "narrow")


def test_kill_9_while_writing_to_milvus_then_rerun_stores_every_video_once(indexed, tmp_path):
    folder, checkpoint, videos, _ = indexed
    shutil.copytree(videos, tmp_path / "videos")
    uri, staging = tmp_path / "videos.db", tmp_path / "staging"
    # Killed (SIGKILL: no cleanup) right after Milvus accepted the first rows of the commit.
    prelude = (
        "import os, signal, pymilvus\n"
        "upsert = pymilvus.MilvusClient.upsert\n"
        "def killed(self, *a, **k):\n"
        "    upsert(self, *a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "pymilvus.MilvusClient.upsert = killed\n"
    )
    arguments = ("--model", checkpoint, "--videos", tmp_path / "videos", *milvus_args(uri, staging), "--batch_size", 1,
                 "--save_every", 1)
    killed = run_indexer(*arguments, prelude=prelude, check=False)
    assert killed.returncode == -9
    assert 0 < len(rows_of(uri)) < 5 and list((staging / "parts").glob("part-*.arrow"))
    output = run_indexer(*arguments).stdout
    # Every embedding survived, in Milvus or in a part: only the unreadable file is tried again.
    assert "5 already indexed, 1 to index" in output
    rows = rows_of(uri)
    assert sorted(row["path"] for row in rows) == sorted(VideoIndex(folder / "index").paths)
    # A vanished video's row is deleted, a changed one re-indexed, on the next run.
    (tmp_path / "videos" / "green.mp4").unlink()
    write_square_video(tmp_path / "videos" / "red.mp4", COLOURS["red"], num_frames=12)
    output = run_indexer(*arguments).stdout
    assert "3 already indexed, 2 to index" in output  # red.mp4 changed, and the unreadable file
    rows = {row["path"]: row for row in rows_of(uri)}
    assert sorted(rows) == ["nested/blue.mp4", "nested/deeper/yellow.mp4", "nested/short.mp4", "red.mp4"]
    stat = (tmp_path / "videos" / "red.mp4").stat()
    assert (rows["red.mp4"]["size"], rows["red.mp4"]["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)


def test_two_indexing_processes_store_every_video_once_and_other_models_are_refused(indexed, tiny_checkpoints, tmp_path):
    folder, checkpoint, videos, _ = indexed
    uri, staging = tmp_path / "videos.db", tmp_path / "staging"
    output = run_indexer(
        "--model", checkpoint, "--videos", videos, *milvus_args(uri, staging), "--batch_size", 1, "--save_every", 1,
        launch=accelerate_launch(2, port=29541),
    ).stdout
    assert "on 2 process(es)" in output and "process 1: embedded" in output
    paths = [row["path"] for row in rows_of(uri)]
    assert sorted(paths) == sorted(VideoIndex(folder / "index").paths) and len(set(paths)) == len(paths)
    # Indexing into it with another model is refused, naming both; nothing is written.
    refused = run_indexer(
        "--model", tiny_checkpoints(seed=1), "--videos", videos, *milvus_args(uri, staging), check=False
    )
    assert refused.returncode != 0
    assert "was built with the model" in refused.stderr and "--rebuild" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert sorted(row["path"] for row in rows_of(uri)) == sorted(paths)


class TokenCheckingServer:
    """A gRPC server on 127.0.0.1 that checks credentials as a Milvus server with authorization enabled does: a call
    without the server's token fails with UNAUTHENTICATED before any method runs. No Milvus server runs here (Milvus
    Lite has no authorization), so this stands in for its authentication step only: it records the `authorization`
    header each call carried and answers nothing else."""

    def __init__(self, token: str):
        import base64
        from concurrent import futures

        import grpc

        self.expected, self.received = base64.b64encode(token.encode()).decode(), []

        class Handler(grpc.GenericRpcHandler):
            def service(handler, call_details):  # noqa: N805
                def refuse(request, context):
                    header = dict(context.invocation_metadata()).get("authorization")
                    self.received.append(header)
                    if header != self.expected:
                        context.abort(
                            grpc.StatusCode.UNAUTHENTICATED,
                            "auth check failure, please check username, password or token is correct",
                        )
                    context.abort(grpc.StatusCode.UNIMPLEMENTED, "only the token is checked here")

                return grpc.unary_unary_rpc_method_handler(refuse)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[Handler()])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self):
        self.server.stop(None)


def test_a_wrong_token_is_refused_by_name_and_never_shown(monkeypatch, capsys, caplog):
    import base64

    server = TokenCheckingServer("the-right-token")
    uri = f"http://reader:uri-password@127.0.0.1:{server.port}"
    try:
        for token in ("a-wrong-token-5f3a", ""):
            monkeypatch.setenv("MILVUS_TOKEN", token)
            with pytest.raises(SystemExit, match=rf"Cannot use Milvus at http://127\.0\.0\.1:{server.port}: the server "
                               r"refused the credentials \(auth check failure.*\): check the token in the environment "
                               r"variable MILVUS_TOKEN") as refused:
                query_main(["--store", "milvus", "--milvus_uri", uri, "red"])
            shown = str(refused.value) + "".join(capsys.readouterr()) + caplog.text
            assert "uri-password" not in shown and (not token or token not in shown) and "Traceback" not in shown
        # The token went to the server in the authorization header, read from the environment.
        assert base64.b64encode(b"a-wrong-token-5f3a").decode() in server.received
    finally:
        server.stop()
    # There is no command-line option for a token: any user of the machine could read it (`ps`).
    with pytest.raises(SystemExit, match="2"):
        query_main(["--store", "milvus", "--milvus_uri", uri, "--milvus_token", "x", "red"])
    assert "unrecognized arguments: --milvus_token" in capsys.readouterr().err

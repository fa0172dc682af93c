"""The transformers video-processor contract of CLIP2VideoVideoProcessor: every input form transformers' `load_video`
and `datasets` produce decodes to the frames of the path form; `num_frames`, `fps`, `do_sample_frames`,
`video_metadata` and `return_metadata` behave as documented; an unknown keyword is an error; the same holds in a
fresh process through `AutoVideoProcessor` / `AutoProcessor`."""

import io
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from clip2video.processing import CLIP2VideoProcessor, CLIP2VideoVideoProcessor, offline_clip_tokenizer
from clip2video.processing.frame_sampling_clip2video import select_source_frames
from tests.helpers.processes import run_isolated
from tests.helpers.videos import frame_index, write_video
from transformers.video_utils import VideoMetadata


NUM_FRAMES, FPS = 60, 30  # the test video: 2 s at 30 fps, frame i shows i in binary stripes


@pytest.fixture(scope="module")
def video_path(tmp_path_factory) -> str:
    return write_video(tmp_path_factory.mktemp("contract") / "clip.mp4", NUM_FRAMES, FPS)


@pytest.fixture(scope="module")
def all_frames(video_path) -> np.ndarray:
    """Every decoded frame of the test video, RGB uint8 (frames, height, width, 3)."""
    with av.open(video_path) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


@pytest.fixture(scope="module")
def processor() -> CLIP2VideoVideoProcessor:
    return CLIP2VideoVideoProcessor(size={"shortest_edge": 32}, crop_size=32, num_frames=4)


def expected_indices(fps=2.5, num_frames=4) -> list[int]:
    """The authors' rule computed independently of the processor, on the constant-rate timeline of the test video."""
    times = [i / FPS for i in range(NUM_FRAMES)]
    return select_source_frames(times, [1 / FPS] * NUM_FRAMES, FPS, sampling_fps=fps, max_frames=num_frames)


def assert_same_output(output, reference):
    assert set(output) == set(reference)
    for key in reference:
        if key == "video_metadata":
            assert [m.frames_indices for m in output[key]] == [m.frames_indices for m in reference[key]]
        else:
            torch.testing.assert_close(output[key], reference[key], rtol=0, atol=0, equal_nan=True)


# ----------------------------------------------------------------------------------------------------------------------
# Input forms


def test_the_path_form_samples_the_authors_frames(processor, video_path):
    output = processor(video_path, return_tensors="pt", return_timestamps=True, return_metadata=True)
    expected = expected_indices()
    assert output["video_mask"].tolist() == [[1, 1, 1, 1]]
    assert output["video_timestamps"][0].tolist() == pytest.approx([i / FPS for i in expected])
    (metadata,) = output["video_metadata"]
    assert isinstance(metadata, VideoMetadata)
    assert (metadata.total_num_frames, metadata.fps, metadata.frames_indices) == (NUM_FRAMES, FPS, expected)
    assert (metadata.width, metadata.height, metadata.video_backend) == (64, 48, "pyav")
    assert metadata.duration == pytest.approx(NUM_FRAMES / FPS)
    assert metadata.timestamps == pytest.approx(output["video_timestamps"][0].tolist())


@pytest.fixture(scope="module")
def reference(processor, video_path):
    return processor(video_path, return_tensors="pt", return_timestamps=True, return_metadata=True)


def encoded_forms(video_path: str):
    data = Path(video_path).read_bytes()
    return {
        "Path": Path(video_path),
        "bytes": data,
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
        "BytesIO": io.BytesIO(data),
        "dict with bytes": {"path": "clip.mp4", "bytes": data},
        "dict with a path": {"path": video_path, "bytes": None},
    }


@pytest.mark.parametrize(
    "form", ["Path", "bytes", "bytearray", "memoryview", "BytesIO", "dict with bytes", "dict with a path"]
)
def test_encoded_forms_decode_to_the_frames_of_the_path(processor, video_path, reference, form):
    video = encoded_forms(video_path)[form]
    output = processor(video, return_tensors="pt", return_timestamps=True, return_metadata=True)
    assert_same_output(output, reference)
    # The same in a batch, next to the path.
    batch = processor([video_path, encoded_forms(video_path)[form]], return_tensors="pt")
    torch.testing.assert_close(batch["pixel_values_videos"][1], reference["pixel_values_videos"][0], rtol=0, atol=0)


def test_open_file_object(processor, video_path, reference):
    with open(video_path, "rb") as file:
        assert_same_output(processor(file, return_timestamps=True, return_metadata=True), reference)


def test_datasets_video_column_without_decoding(processor, video_path, reference, tmp_path):
    datasets = pytest.importorskip("datasets")
    for column in (
        datasets.Dataset.from_dict({"video": [video_path]}).cast_column("video", datasets.Video(decode=False)),
        datasets.Dataset.from_dict({"video": [{"path": None, "bytes": Path(video_path).read_bytes()}]}).cast_column(
            "video", datasets.Video(decode=False)
        ),
    ):
        row = column[0]["video"]
        assert isinstance(row, dict) and set(row) == {"path", "bytes"}
        assert_same_output(processor(row, return_timestamps=True, return_metadata=True), reference)
        batch = processor(column["video"][:1] * 2, return_timestamps=True)
        torch.testing.assert_close(batch["pixel_values_videos"][1], reference["pixel_values_videos"][0], rtol=0, atol=0)


def test_torchcodec_decoder_as_datasets_decodes_it(processor, video_path, reference):
    decoders = pytest.importorskip("torchcodec.decoders")
    datasets = pytest.importorskip("datasets")
    decoded_row = datasets.Dataset.from_dict({"video": [video_path]}).cast_column("video", datasets.Video())[0]["video"]
    assert isinstance(decoded_row, decoders.VideoDecoder)
    for video in (decoders.VideoDecoder(video_path), decoded_row):
        output = processor(video, return_timestamps=True, return_metadata=True)
        assert output["video_metadata"][0].frames_indices == expected_indices()
        assert output["video_metadata"][0].video_backend == "torchcodec"
        torch.testing.assert_close(output["video_timestamps"], reference["video_timestamps"])
        # torchcodec's FFmpeg may convert YUV to RGB slightly differently from PyAV's.
        torch.testing.assert_close(output["pixel_values_videos"], reference["pixel_values_videos"], atol=0.05, rtol=0)


def test_url(processor, video_path, reference, serve_folder):
    url = serve_folder(Path(video_path).parent).url + "/clip.mp4"
    with pytest.raises(ValueError, match="resolves to the non-public address 127.0.0.1"):  # refused by default
        processor(url)
    output = processor(url, allow_private_urls=True, return_timestamps=True, return_metadata=True)
    assert_same_output(output, reference)


@pytest.mark.parametrize("form", ["uint8 NHWC", "uint8 NCHW tensor", "float [0, 1]", "float tensor", "PIL", "arrays"])
def test_decoded_frames_with_their_rate_give_the_frames_of_the_path(processor, all_frames, reference, form):
    frames = {
        "uint8 NHWC": all_frames,
        "uint8 NCHW tensor": torch.from_numpy(all_frames).permute(0, 3, 1, 2),
        "float [0, 1]": all_frames.astype(np.float32) / 255,
        "float tensor": torch.from_numpy(all_frames).double() / 255,
        "PIL": [Image.fromarray(frame) for frame in all_frames],
        "arrays": list(all_frames),
    }[form]
    for metadata in ({"fps": FPS}, VideoMetadata(total_num_frames=NUM_FRAMES, fps=FPS), {"duration": 2.0}):
        output = processor(frames, video_metadata=metadata, return_timestamps=True, return_metadata=True)
        assert_same_output(output, reference)


def test_frames_and_metadata_from_transformers_load_video(processor, video_path, all_frames, reference):
    from transformers.video_utils import load_video

    # Every frame, with the metadata load_video returns: the path's frames.
    video, metadata = load_video(video_path, backend="pyav")
    output = processor(video, video_metadata=metadata, return_timestamps=True, return_metadata=True)
    assert_same_output(output, reference)
    # 20 frames load_video sampled from the 60: the rule runs on their own times (source index / fps), and the
    # chosen frames are named by their source index.
    video, metadata = load_video(video_path, backend="pyav", num_frames=20)
    assert metadata.total_num_frames == NUM_FRAMES and len(video) == 20
    output = processor(video, video_metadata=metadata, return_timestamps=True, return_metadata=True)
    chosen = output["video_metadata"][0].frames_indices
    assert len(chosen) == 4 and set(chosen) <= {int(i) for i in metadata.frames_indices}
    assert output["video_timestamps"][0].tolist() == pytest.approx([i / FPS for i in chosen])
    direct = processor(all_frames[chosen], do_sample_frames=False)
    torch.testing.assert_close(output["pixel_values_videos"], direct["pixel_values_videos"], rtol=0, atol=0)


@pytest.fixture(scope="module")
def frame_images(all_frames, tmp_path_factory) -> list[str]:
    """The test video's frames as PNG files (lossless), in order: how the authors store pre-extracted frames."""
    folder = tmp_path_factory.mktemp("frames")
    paths = []
    for index, frame in enumerate(all_frames):
        paths.append(str(folder / f"{index:08d}.png"))
        Image.fromarray(frame).save(paths[-1])
    return paths


def test_frame_image_paths_are_one_video(processor, frame_images, reference):
    output = processor(frame_images, video_metadata={"fps": FPS}, return_timestamps=True, return_metadata=True)
    assert_same_output(output, reference)
    # A batch of such videos is a list of lists, each a whole video.
    batch = processor([frame_images, frame_images[:30]], video_metadata=[{"fps": FPS}, {"fps": FPS}])
    torch.testing.assert_close(batch["pixel_values_videos"][0], reference["pixel_values_videos"][0], rtol=0, atol=0)
    assert batch["video_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]  # 1 s at 30 fps: 7 images, 3 kept
    # Without a rate the images are taken as already extracted (at 5 fps): all kept, reduced uniformly.
    decoded = processor(frame_images[:3], return_tensors="pt", return_metadata=True)
    assert decoded["video_metadata"][0].frames_indices == [0, 1, 2]
    direct = processor(np.stack([np.array(Image.open(path)) for path in frame_images[:3]]))
    torch.testing.assert_close(decoded["pixel_values_videos"], direct["pixel_values_videos"], rtol=0, atol=0)


def test_only_the_chosen_frame_images_are_read(processor, frame_images, tmp_path):
    # An unreadable image that the sampling skips is never opened; one it picks is named in the error.
    broken = tmp_path / "00000001.png"
    broken.write_bytes(b"not an image")
    paths = [frame_images[0], str(broken), *frame_images[2:]]
    processor(paths, video_metadata={"fps": FPS})
    with pytest.raises(ValueError, match="00000001.png"):
        processor(paths, do_sample_frames=False, num_frames=NUM_FRAMES)


def test_an_image_path_is_never_a_one_frame_video(processor, video_path, frame_images):
    with pytest.raises(ValueError, match="list of their paths"):
        processor([video_path, frame_images[0]])
    with pytest.raises(ValueError, match="list of their paths"):
        processor(frame_images[0])


# ----------------------------------------------------------------------------------------------------------------------
# Standard arguments


def test_num_frames_is_at_most_that_many_frames(processor, video_path):
    for num_frames in (1, 2, 7):
        output = processor(video_path, num_frames=num_frames, return_metadata=True)
        assert output["video_metadata"][0].frames_indices == expected_indices(num_frames=num_frames)
        assert output["video_mask"].shape == (1, num_frames)  # padded to num_frames
    # ffmpeg -r 5 writes 12 images of the 2 s video; 2.5 fps keeps 6, however many more are allowed.
    many = processor(video_path, num_frames=12, return_metadata=True, pad_to_max_frames=False)
    assert many["video_mask"].tolist() == [[1] * 6]


def test_num_frames_is_bounded_before_any_allocation(processor, video_path):
    # Every video is padded to `num_frames` float32 slots: a huge request must fail at once, not allocate.
    for bad in (10**9, 1025, 0, -3):
        with pytest.raises(ValueError, match="`num_frames` must be an integer from 1 to 1024"):
            processor(videos=[video_path], num_frames=bad, return_tensors="pt")


def test_fps_is_the_sampling_rate(processor, video_path):
    for fps in (5, 2.5, 1):
        output = processor(video_path, fps=fps, num_frames=20, return_metadata=True, pad_to_max_frames=False)
        assert output["video_metadata"][0].frames_indices == expected_indices(fps=fps, num_frames=20)
    assert len(expected_indices(fps=5, num_frames=20)) == 12  # every image ffmpeg -r 5 writes of the 2 s video
    with pytest.raises(ValueError, match="`fps` must be in"):
        processor(video_path, fps=6)


def test_without_sampling_every_given_frame_is_used(processor, all_frames, video_path):
    frames = all_frames[[5, 17, 40]]
    output = processor(frames, do_sample_frames=False, return_metadata=True, return_timestamps=True)
    assert output["video_mask"].tolist() == [[1, 1, 1, 0]]
    assert output["video_metadata"][0].frames_indices == [0, 1, 2]
    reference = processor(list(frames), video_metadata={"fps": 0.5}, return_timestamps=True)  # 1 frame per 2 s
    torch.testing.assert_close(output["pixel_values_videos"], reference["pixel_values_videos"], rtol=0, atol=0)
    # Too many frames is an error, checked before decoding for a file.
    with pytest.raises(ValueError, match="has 60 frames but `num_frames` is 4"):
        processor(all_frames, do_sample_frames=False)
    with pytest.raises(ValueError, match=r"clip\.mp4\) has 60 frames"):
        processor(video_path, do_sample_frames=False)
    whole = processor(video_path, do_sample_frames=False, num_frames=NUM_FRAMES, return_metadata=True)
    assert whole["video_metadata"][0].frames_indices == list(range(NUM_FRAMES))
    assert [frame_index(f) for f in all_frames] == list(range(NUM_FRAMES))


def test_video_metadata_for_frames_only(processor, video_path, all_frames):
    with pytest.raises(ValueError, match="only for videos given as frames"):
        processor(video_path, video_metadata={"fps": 30})
    with pytest.raises(ValueError, match="total_num_frames=10"):
        processor(all_frames, video_metadata={"fps": 30, "total_num_frames": 10})
    with pytest.raises(ValueError, match="2 videos but 1"):
        processor([all_frames, all_frames], video_metadata=[{"fps": 30}])


def test_unknown_keyword_raises(processor, video_path):
    with pytest.raises(TypeError, match="max_frame"):
        processor(video_path, max_frame=4)
    with pytest.raises(ValueError, match="`num_frames` must be an integer from 1 to 1024.*got 0"):
        processor(video_path, num_frames=0)


def test_unknown_keyword_raises_through_the_processor_too(processor, all_frames):
    combined = CLIP2VideoProcessor(video_processor=processor, tokenizer=offline_clip_tokenizer())
    with pytest.raises(TypeError, match="unknown keyword argument\\(s\\): max_frame"):
        combined(text=["a clip"], videos=all_frames, max_frame=4)
    # Keywords of either modality, flat or grouped as transformers allows, still reach their processor.
    output = combined(
        text=["a clip"], videos=all_frames, num_frames=2, padding="max_length", return_tensors="pt", images=None
    )
    assert output["video_mask"].shape == (1, 2) and output["input_ids"].shape == (1, 32)
    grouped = combined(text=["a clip"], videos=all_frames, videos_kwargs={"num_frames": 3}, text_kwargs={"max_length": 16})
    assert grouped["video_mask"].shape == (1, 3) and len(grouped["input_ids"][0]) == 16


def test_earlier_argument_names_still_load(tmp_path):
    old = CLIP2VideoVideoProcessor(max_frames=6, sampling_fps=5)
    assert (old.num_frames, old.fps) == (6, 5)
    old.save_pretrained(tmp_path)
    assert CLIP2VideoVideoProcessor.from_pretrained(tmp_path).num_frames == 6
    with pytest.raises(ValueError, match="`max_frames` is `num_frames`"):
        CLIP2VideoVideoProcessor(max_frames=6, num_frames=8)


# ----------------------------------------------------------------------------------------------------------------------
# Fresh process, through the Auto classes


@pytest.mark.slow
def test_fresh_process_auto_classes_honour_the_standard_arguments(processor, video_path, tmp_path):
    folder = tmp_path / "checkpoint"
    CLIP2VideoProcessor(video_processor=processor, tokenizer=offline_clip_tokenizer()).save_pretrained(folder)
    (tmp_path / "clip.mp4").write_bytes(Path(video_path).read_bytes())
    expected = processor([video_path], num_frames=2, fps=5, return_timestamps=True)
    run_isolated(
        """
        import torch
        from transformers import AutoProcessor, AutoVideoProcessor
        from transformers.video_utils import VideoMetadata
        video_processor = AutoVideoProcessor.from_pretrained("checkpoint", trust_remote_code=True)
        processor = AutoProcessor.from_pretrained("checkpoint", trust_remote_code=True)
        assert type(video_processor).__module__.startswith("transformers_modules")
        alone = video_processor(["clip.mp4"], num_frames=2, fps=5, return_timestamps=True, return_metadata=True)
        both = processor(text=["a clip"], videos=["clip.mp4"], num_frames=2, fps=5, return_timestamps=True,
                         return_tensors="pt")
        assert isinstance(alone["video_metadata"][0], VideoMetadata)
        try:
            video_processor(["clip.mp4"], max_frame=4)
        except TypeError:
            pass
        else:
            raise AssertionError("an unknown keyword was accepted")
        torch.save({"alone": {k: alone[k] for k in ("pixel_values_videos", "video_timestamps")},
                    "both": {k: both[k] for k in ("pixel_values_videos", "video_timestamps")},
                    "indices": alone["video_metadata"][0].frames_indices}, "outputs.pt")
        """,
        cwd=tmp_path,
    )
    outputs = torch.load(tmp_path / "outputs.pt")
    for key in ("pixel_values_videos", "video_timestamps"):
        torch.testing.assert_close(outputs["alone"][key], expected[key], rtol=0, atol=0)
        torch.testing.assert_close(outputs["both"][key], expected[key], rtol=0, atol=0)
    assert outputs["indices"] == expected_indices(fps=5, num_frames=2)

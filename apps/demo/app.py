"""CLIP2Video demo, in the shape of a Hugging Face Space: pick or upload videos, type a query (or labels), and see
the videos ranked by the model, each with the frame that matches the words best and its score.

    python apps/demo/app.py                              # outputs/clip2video-synthetic on http://127.0.0.1:7860
    python apps/demo/app.py --model clip2video-msrvtt --examples_dir my_videos --port 8080
    CLIP2VIDEO_MODEL=my-org/clip2video-msrvtt python app.py     # on a Space (set the variable in its settings)

Runs offline with a local checkpoint, on the GPU when there is one (bfloat16 there; `--device`, `--dtype`). Scores
are the model's `logits_per_text` (query mode; higher is better) or the softmax over the labels of
`logits_per_video` (labels mode, through the zero-shot pipeline's own caption and ranking functions). Uploads and
videos obey the processor's decoding limits (`CLIP2VIDEO_MAX_INPUT_BYTES` and the other `CLIP2VIDEO_*` variables):
a larger upload is refused with a message saying which file and which limit.
"""

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: the demo must work offline

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModel, AutoProcessor  # noqa: E402

from clip2video.pipelines.pipeline_clip2video import (  # noqa: E402
    DEFAULT_HYPOTHESIS_TEMPLATE,
    check_hypothesis_template,
    check_labels,
    hypothesis_captions,
    rank_labels,
)
from clip2video.processing.video_decoding_clip2video import DecodeLimits  # noqa: E402


DEFAULT_MODEL = os.environ.get("CLIP2VIDEO_MODEL", "outputs/clip2video-synthetic")
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ogv")
MAX_VIDEOS = 16  # decoded together in one batch
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class RankedVideo:
    name: str
    score: float
    moment_seconds: float  # the frame closest to the query (the first frame in labels mode)
    thumbnail: np.ndarray  # that frame as the model saw it, (height, width, 3) uint8
    labels: list[tuple[str, float]] | None = None  # labels mode: (label, probability), best first


class VideoRanker:
    """The model and processor of a checkpoint, and the two ways the demo uses them.

    Args:
        device (`str`, *optional*): defaults to `"cuda"` when available, else `"cpu"`.
        dtype (`str`, *optional*): defaults to `"bfloat16"` on CUDA, `"float32"` elsewhere.
    """

    def __init__(self, model_name: str, device: str | None = None, dtype: str | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = DTYPES[dtype or ("bfloat16" if self.device.type == "cuda" else "float32")]
        self.model = AutoModel.from_pretrained(model_name, trust_remote_code=True, dtype=dtype).to(self.device).eval()
        self.dtype = dtype
        self.processor = AutoProcessor.from_pretrained(model_name, trust_remote_code=True)
        video_processor = self.processor.video_processor
        self.mean = torch.tensor(video_processor.image_mean).view(3, 1, 1)
        self.std = torch.tensor(video_processor.image_std).view(3, 1, 1)

    @torch.inference_mode()
    def _run(self, captions: list[str], videos: list[str]):
        inputs = self.processor(text=captions, videos=videos, return_tensors="pt", return_timestamps=True)
        timestamps = inputs.pop("video_timestamps")
        inputs = inputs.to(self.device)
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.dtype)
        return inputs, timestamps, self.model(**inputs)

    def _thumbnail(self, pixels: torch.Tensor) -> np.ndarray:
        image = (pixels.float().cpu() * self.std + self.mean).clamp(0, 1) * 255
        return image.round().to(torch.uint8).permute(1, 2, 0).numpy()

    def rank(self, videos: list[str], query: str) -> list[RankedVideo]:
        """The videos sorted by `logits_per_text` for the query, best first."""
        inputs, timestamps, output = self._run([query], videos)
        scores = output.logits_per_text[0].float().cpu()
        # Best moment: the frame whose CLIP embedding is closest to the caption's global embedding.
        with torch.inference_mode():
            caption = self.model.get_text_features(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
            ).global_embeds[0]
        frames = torch.nn.functional.normalize(output.frame_embeds.float(), dim=-1) @ caption.float()
        frames = frames.masked_fill(inputs["video_mask"] == 0, -float("inf")).cpu()
        ranked = []
        for index in torch.argsort(scores, descending=True, stable=True).tolist():
            best = int(frames[index].argmax())
            ranked.append(
                RankedVideo(
                    name=Path(videos[index]).name,
                    score=float(scores[index]),
                    moment_seconds=float(timestamps[index, best]),
                    thumbnail=self._thumbnail(inputs["pixel_values_videos"][index, best]),
                )
            )
        return ranked

    def classify(self, videos: list[str], labels: list[str], template: str = DEFAULT_HYPOTHESIS_TEMPLATE):
        """Each video (in the order given) with its label probabilities, best first, scored by the zero-shot
        pipeline's own functions (captions from the template, softmax over the labels)."""
        labels = check_labels(labels)
        captions = hypothesis_captions(labels, check_hypothesis_template(template))
        inputs, timestamps, output = self._run(captions, videos)
        results = []
        for index, logits in enumerate(output.logits_per_video.float().cpu()):
            ordered = [(item["label"], item["score"]) for item in rank_labels(logits, labels)]
            results.append(
                RankedVideo(
                    name=Path(videos[index]).name,
                    score=ordered[0][1],
                    moment_seconds=float(timestamps[index, 0]),
                    thumbnail=self._thumbnail(inputs["pixel_values_videos"][index, 0]),
                    labels=ordered,
                )
            )
        return results


def oversized_upload(paths: list[str], limits: DecodeLimits) -> str | None:
    """The message for the first upload over `limits.max_input_bytes`, or None."""
    for path in paths:
        size = os.path.getsize(path)
        if size > limits.max_input_bytes:
            return (
                f"{Path(path).name} is {size:,} bytes, over this demo's limit of {limits.max_input_bytes:,} bytes "
                "per video (CLIP2VIDEO_MAX_INPUT_BYTES)."
            )
    return None


def list_example_videos(examples_dir: str | None) -> dict[str, str]:
    if not examples_dir:
        return {}
    folder = Path(examples_dir)
    if not folder.is_dir():
        raise SystemExit(f"--examples_dir {examples_dir} is not a folder.")
    return {p.name: str(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()}


def format_ranking(results: list[RankedVideo], mode: str) -> str:
    lines = []
    for rank, result in enumerate(results, 1):
        if mode == "query":
            lines.append(
                f"{rank}. **{result.name}** | score {result.score:.4f} | best moment {result.moment_seconds:.2f} s"
            )
        else:  # every video with its labels, in the order given
            labels = ", ".join(f"{label} {probability:.4f}" for label, probability in result.labels)
            lines.append(f"- **{result.name}** | {labels}")
    return "\n".join(lines)


def build_demo(ranker: VideoRanker, examples: dict[str, str], limits: DecodeLimits) -> gr.Blocks:
    def run(uploaded, picked, mode, text):
        uploads = [str(path) for path in uploaded or []]
        videos = uploads + [examples[name] for name in picked or [] if name in examples]
        if not videos:
            raise gr.Error("Upload a video or pick an example first.")
        if len(videos) > MAX_VIDEOS:
            raise gr.Error(f"At most {MAX_VIDEOS} videos at a time, got {len(videos)}.")
        refused = oversized_upload(uploads, limits)
        if refused:
            raise gr.Error(refused)
        if not text or not text.strip():
            raise gr.Error("Type a query." if mode == "query" else "Type labels, separated by commas.")
        try:
            if mode == "query":
                results = ranker.rank(videos, text.strip())
                captions = [f"{r.name}: {r.score:.3f} at {r.moment_seconds:.1f} s" for r in results]
            else:
                labels = [label.strip() for label in text.split(",") if label.strip()]
                results = ranker.classify(videos, labels)
                captions = [f"{r.name}: {r.labels[0][0]} ({r.labels[0][1]:.2f})" for r in results]
        except (FileNotFoundError, ValueError) as error:  # unreadable video or over a limit: say which and why
            raise gr.Error(str(error)) from None
        gallery = [(result.thumbnail, caption) for result, caption in zip(results, captions)]
        return gallery, format_ranking(results, mode)

    with gr.Blocks(title="CLIP2Video video search") as demo:
        gr.Markdown(
            "# CLIP2Video: find videos with words\n"
            "Upload videos (or pick examples), then rank them for a query, or classify each of them with your own "
            "labels. Scores come from the model; each thumbnail is the sampled frame that matches the query best."
        )
        with gr.Row():
            with gr.Column():
                uploaded = gr.File(label="Upload videos", file_count="multiple", file_types=["video"], elem_id="upload")
                picked = gr.CheckboxGroup(
                    choices=list(examples), label="Example videos", visible=bool(examples), elem_id="examples"
                )
                mode = gr.Radio(
                    choices=[("Rank videos for a query", "query"), ("Classify with labels", "labels")],
                    value="query", label="What to do", elem_id="mode",
                )
                text = gr.Textbox(
                    label="Query, or labels separated by commas", placeholder="a man is playing the guitar",
                    elem_id="text",
                )
                button = gr.Button("Rank videos", variant="primary", elem_id="run")
            with gr.Column():
                gallery = gr.Gallery(label="Ranked videos", columns=3, elem_id="gallery")
                ranking = gr.Markdown(elem_id="ranking")
        button.click(run, inputs=[uploaded, picked, mode, text], outputs=[gallery, ranking])
        text.submit(run, inputs=[uploaded, picked, mode, text], outputs=[gallery, ranking])
    return demo


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint folder or Hub id (env CLIP2VIDEO_MODEL)")
    parser.add_argument("--examples_dir", default=os.environ.get("CLIP2VIDEO_EXAMPLES"), help="videos to pick from")
    parser.add_argument(
        "--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="address to serve on (a Space sets 0.0.0.0)",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bfloat16 on cuda, else float32")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        ranker = VideoRanker(args.model, device=args.device, dtype=args.dtype)
    except OSError as error:
        raise SystemExit(
            f"Cannot load the model {args.model!r} ({error}). Train the default one with `python training/run.py` "
            "(it writes outputs/clip2video-synthetic), or pass --model / set CLIP2VIDEO_MODEL."
        ) from None
    limits = DecodeLimits.from_env()
    demo = build_demo(ranker, list_example_videos(args.examples_dir), limits)
    # System fonts: the default theme would fetch Google Fonts, which an offline machine cannot.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    # Gradio refuses larger uploads itself; `run` says which file and which limit for the ones it lets through.
    demo.launch(
        server_name=args.host, server_port=args.port, theme=theme, show_error=True,
        max_file_size=limits.max_input_bytes,
    )


if __name__ == "__main__":
    main()

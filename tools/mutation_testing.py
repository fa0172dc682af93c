"""Mutation testing of CLIP2Video's core: plant realistic bugs one at a time and check that the tests catch them.

    python tools/mutation_testing.py                  # the whole catalogue against HEAD (about 20-30 min, 2 cores)
    python tools/mutation_testing.py --list           # the catalogue and which snippets HEAD still holds
    python tools/mutation_testing.py --only 'model.*' # mutants whose name matches a glob (repeatable)

Each mutant is one exact snippet of a source file replaced by a buggy variant (`MUTANTS` below). The campaign never
touches the repository's working tree, which others may be editing and testing: it extracts `--ref` (default HEAD)
with `git archive` into a private folder, and makes that copy's code the one the tests import by putting a
`clip2video/` folder of symlinks into the copy first on `PYTHONPATH` (the editable install's finder comes after the
normal path search, so the copy wins; the harness checks this before planting anything). Remote-code tests copy the
module files of the copy, mutated ones included, into their checkpoints.

For every mutant only the tests of the mutated module run (`TESTS_OF`), with `pytest -x`, under a per-mutant time
limit derived from the unmutated run. A mutant is *caught* when the tests fail (or time out), *survives* when they
pass, and is *not applicable* when its snippet is no longer in the file exactly once (the code moved on: update the
catalogue). Mutants marked `equivalent` cannot change any behaviour (the reason says why); they are planted anyway,
reported apart and left out of the kill rate.

The exit status is 0 when the kill rate reaches `--required_kill_rate` (default 95%) and 1 otherwise; 2 when the
unmutated tests already fail (no mutant is planted then).
"""

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Folders installed as `clip2video.<folder>` (pyproject.toml, [tool.setuptools] package-dir).
PACKAGE_FOLDERS = ("modeling_clip2video", "processing", "training", "pipelines", "apps", "model_cards")


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # source file, relative to the repository root
    # Exact snippet, which must occur once in the file, and its buggy variant. Tuples give the same bug in successive
    # versions of the code: the first snippet found once is planted.
    original: str | tuple[str, ...]
    replacement: str | tuple[str, ...]
    description: str
    equivalent: str = ""  # why no test can catch it (behaviour provably unchanged); empty for a real bug


MODEL = "modeling_clip2video/modeling_clip2video.py"
CONVERTER = "modeling_clip2video/convert_original_checkpoint.py"
SAMPLING = "processing/frame_sampling_clip2video.py"
VIDEO_PROCESSING = "processing/video_processing_clip2video.py"
VIDEO_INPUTS = "processing/video_inputs_clip2video.py"
DECODING = "processing/video_decoding_clip2video.py"
PROCESSOR = "processing/processing_clip2video.py"
CONTRASTIVE = "training/contrastive.py"
RUN = "training/run.py"
RECIPES = "training/recipes.py"
EVALUATION = "training/evaluation.py"
METRICS = "training/metrics/video_text_retrieval/video_text_retrieval.py"
SEARCH = "apps/search/video_index.py"
PIPELINES = "pipelines/pipeline_clip2video.py"
HANDLER = "pipelines/publishing/endpoint/handler.py"

# The tests that exercise each module, fastest and sharpest first (pytest -x stops at the first failure).
TESTS_OF = {
    MODEL: [
        "tests/test_temporal_blocks_by_hand.py",
        "tests/test_scoring_mix.py",
        "tests/test_temporal_layer_settings.py",
        "tests/test_model_outputs.py",
        "tests/test_modeling.py",
        "tests/test_conversion.py",
    ],
    CONVERTER: ["tests/test_conversion_formats.py", "tests/test_scoring_mix.py", "tests/test_conversion.py"],
    SAMPLING: ["tests/test_frame_sampling_rules.py", "tests/test_frame_sampling_vfr.py", "tests/test_processing.py"],
    DECODING: ["tests/test_frame_sampling_vfr.py", "tests/test_processing.py"],
    VIDEO_PROCESSING: ["tests/test_processing.py", "tests/test_video_processor_contract.py"],
    VIDEO_INPUTS: ["tests/test_processing.py", "tests/test_video_processor_contract.py"],
    PROCESSOR: ["tests/test_caption_cleaning.py", "tests/test_processing_text_and_hub.py", "tests/test_processing.py"],
    CONTRASTIVE: ["tests/test_logit_scale_clamp.py", "tests/test_training_distributed.py"],
    RUN: [
        "tests/test_logit_scale_clamp.py",
        "tests/test_training_evaluation.py",
        "tests/test_training_recipes.py",
    ],
    RECIPES: ["tests/test_training_recipes.py", "tests/test_logit_scale_clamp.py"],
    EVALUATION: ["tests/test_training_evaluation.py"],
    METRICS: [
        "tests/test_retrieval_metrics_by_counting.py",
        "tests/test_training_metrics.py",
        "tests/test_training_evaluation.py",
    ],
    SEARCH: ["tests/test_search.py"],
    PIPELINES: ["tests/test_label_order.py", "tests/test_pipelines.py"],
    HANDLER: ["tests/test_label_order.py", "tests/test_endpoint_handler.py"],
}

MUTANTS = [
    # ---------------------------------------------------------------------------------------------------------
    # The model
    # ---------------------------------------------------------------------------------------------------------
    Mutant(
        "model.score_mix_swapped", MODEL,
        "return w * global_logits + (1.0 - w) * aligned_logits, global_logits, aligned_logits",
        "return (1.0 - w) * global_logits + w * aligned_logits, global_logits, aligned_logits",
        "w and 1 - w swapped in the global/aligned score mix",
    ),
    Mutant(
        "model.retrieval_embeds_weights_swapped", MODEL,
        "[math.sqrt(weight) * global_embeds, math.sqrt(1.0 - weight) * aligned_embeds]",
        "[math.sqrt(1.0 - weight) * global_embeds, math.sqrt(weight) * aligned_embeds]",
        "w and 1 - w swapped in the retrieval embedding",
    ),
    Mutant(
        "model.loss_weights_swapped", MODEL,
        "return w * loss + (1.0 - w) * symmetric_contrastive_loss(aligned_logits)",
        "return (1.0 - w) * loss + w * symmetric_contrastive_loss(aligned_logits)",
        "w and 1 - w swapped in the loss",
    ),
    Mutant(
        "model.loss_one_direction", MODEL,
        "(F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2",
        "(F.cross_entropy(logits, targets) + F.cross_entropy(logits, targets)) / 2",
        "InfoNCE text-to-video only (the video-to-text term dropped)",
    ),
    Mutant(
        "model.logit_scale_not_exponentiated", MODEL,
        "scale = logit_scale.exp()", "scale = logit_scale",
        "the logit scale used as the inverse temperature instead of its log",
    ),
    Mutant(
        "model.logits_per_video_not_transposed", MODEL,
        "logits_per_video=logits_per_text.t(),", "logits_per_video=logits_per_text,",
        "logits_per_video equal to logits_per_text (right only for square symmetric cases)",
    ),
    Mutant(
        "model.tdb_difference_reversed", MODEL,
        "differences = frames[:, 1:] - frames[:, :-1]", "differences = frames[:, :-1] - frames[:, 1:]",
        "TDB differences taken backwards (f_i - f_i+1)",
    ),
    Mutant(
        "model.tdb_difference_mask_or", MODEL,
        "difference_mask = frame_mask[:, 1:] & frame_mask[:, :-1]",
        "difference_mask = frame_mask[:, 1:] | frame_mask[:, :-1]",
        "a difference token beside the first padded frame counted as real",
    ),
    Mutant(
        "model.tdb_sigmoid_not_centred", MODEL,
        "differences = 2 * torch.sigmoid(self.difference_norm(differences)) - 1",
        "differences = torch.sigmoid(self.difference_norm(differences))",
        "TDB projection to [0, 1] instead of [-1, 1]",
    ),
    Mutant(
        "model.tdb_frame_type_row", MODEL,
        (
            "tokens[:, 0::2] = frames + frame_positions + self.type_embeddings.weight[1]",
            "tokens[:, 0::2] = frames + frame_positions + frame_type",
        ),
        (
            "tokens[:, 0::2] = frames + frame_positions + self.type_embeddings.weight[0]",
            "tokens[:, 0::2] = frames + frame_positions + difference_type",
        ),
        "frame tokens get the difference type embedding",
    ),
    Mutant(
        "model.tdb_difference_position", MODEL,
        (
            "tokens[:, 1::2] = differences + frame_positions[:-1] + self.type_embeddings.weight[0]",
            "tokens[:, 1::2] = differences + frame_positions[:-1] + difference_type",
        ),
        (
            "tokens[:, 1::2] = differences + frame_positions[1:] + self.type_embeddings.weight[0]",
            "tokens[:, 1::2] = differences + frame_positions[1:] + difference_type",
        ),
        "difference d_i gets the position of f_i+1 instead of f_i",
    ),
    Mutant(
        "model.tdb_attention_without_positions", MODEL,
        "differences = self.difference_attention(differences + frame_positions[1:], difference_mask)",
        "differences = self.difference_attention(differences, difference_mask)",
        "the difference attention layer runs without frame positions",
    ),
    Mutant(
        "model.temporal_residual_dropped", MODEL,
        "frames = frame_outputs + frames", "frames = frame_outputs",
        "the temporal transformer's residual connection to the frame embeddings dropped",
    ),
    Mutant(
        "model.global_frames_not_normalised", MODEL,
        "return F.normalize(masked_mean(F.normalize(frames, dim=-1), frame_mask), dim=-1)",
        "return F.normalize(masked_mean(frames, frame_mask), dim=-1)",
        "frames averaged before, not after, their L2 normalisation",
    ),
    Mutant(
        "model.masked_mean_unclamped", MODEL,
        "weights.sum(dim=1).clamp(min=1.0)", "weights.sum(dim=1)",
        "no guard against an all-padding row in the masked mean",
        equivalent="_check_video_inputs rejects videos without a real frame, so the sum is always >= 1",
    ),
    Mutant(
        "model.tab_softmax_over_tokens", MODEL,
        "assignment = torch.softmax(tokens @ self.assignment_centers.t(), dim=-1)",
        "assignment = torch.softmax(tokens @ self.assignment_centers.t(), dim=1)",
        "TAB assignment normalised over tokens instead of centres",
    ),
    Mutant(
        "model.tab_mask_ignored", MODEL,
        "assignment = assignment * token_mask.unsqueeze(-1).to(assignment.dtype)", "pass",
        "TAB counts padded tokens",
    ),
    Mutant(
        "model.tab_residual_to_assignment_centres", MODEL,
        "residuals = residuals - assignment.sum(dim=1).unsqueeze(-1) * self.residual_centers",
        "residuals = residuals - assignment.sum(dim=1).unsqueeze(-1) * self.assignment_centers",
        "TAB residuals taken to the assignment centres",
    ),
    Mutant(
        "model.tab_no_intra_normalisation", MODEL,
        "residuals = F.normalize(residuals, dim=-1)\n", "\n",
        "TAB residuals averaged without per-centre normalisation",
    ),
    Mutant(
        "model.tab_final_not_normalised", MODEL,
        "return F.normalize(residuals.mean(dim=1), dim=-1)", "return residuals.mean(dim=1)",
        "TAB's aligned embedding not L2-normalised",
    ),
    Mutant(
        "model.text_global_not_normalised", MODEL,
        "return F.normalize(pooled.to(head_dtype), dim=-1), aligned_embeds", "return pooled.to(head_dtype), aligned_embeds",
        "the caption's global embedding not L2-normalised",
    ),
    Mutant(
        "model.tab_start_token_kept", MODEL,
        "word_mask[:, 0] = False", "pass",
        "the start token joins the caption's TAB tokens",
    ),
    Mutant(
        "model.tab_sparse_frames_odd", MODEL,
        "sparse_frames, sparse_mask = frames[:, 0::2], frame_mask[:, 0::2]",
        "sparse_frames, sparse_mask = frames[:, 1::2], frame_mask[:, 1::2]",
        "TAB re-encodes the odd frames instead of every second frame from the first",
    ),
    Mutant(
        "model.tab_encoder_residual_dropped", MODEL,
        "tokens = torch.cat([frames, encoded + sparse_frames], dim=1)",
        "tokens = torch.cat([frames, encoded], dim=1)",
        "TAB's re-encoded frames lose their residual connection",
    ),
    Mutant(
        "model.temporal_layer_norm_eps", MODEL,
        "layer_norm_eps=config.temporal_layer_norm_eps,", "layer_norm_eps=text_config.layer_norm_eps,",
        "temporal layers use CLIP's LayerNorm epsilon (1e-5) instead of the original's (1e-12)",
    ),
    Mutant(
        "model.temporal_attn_implementation_not_inherited", MODEL,
        "    layers_config._attn_implementation = config._attn_implementation\n", "",
        "the temporal layers' sub-config does not inherit the attention implementation",
    ),
    Mutant(
        "model.from_clip_type_rows", MODEL,
        'copies["temporal_difference_block.type_embeddings.weight"] = text_positions[:2]',
        'copies["temporal_difference_block.type_embeddings.weight"] = text_positions[1:3]',
        "type embeddings initialised from the wrong rows of CLIP's position table",
    ),
    Mutant(
        "model.from_clip_overwrites_loaded", MODEL,
        "initialised = sorted(name for name in copies if name in missing_keys)",
        "initialised = sorted(copies)",
        "initialisation from CLIP overwrites trained temporal weights",
    ),
    Mutant(
        "model.head_in_half_precision", MODEL,
        '        "temporal_alignment_block",\n        "logit_scale",\n', '        "logit_scale",\n',
        "TAB no longer kept in float32 when the model loads in half precision",
    ),
    Mutant(
        "model.prefix_check_dropped", MODEL,
        "        if not_prefix.any():\n", "        if False:\n",
        "masks with padding before real frames are accepted",
    ),
    # ---------------------------------------------------------------------------------------------------------
    # The converter
    # ---------------------------------------------------------------------------------------------------------
    Mutant(
        "converter.center_weight_complement", CONVERTER,
        'global_similarity_weight=float(flags["center_weight"]),',
        'global_similarity_weight=1.0 - float(flags["center_weight"]),',
        "--center_weight stored as the aligned part's weight",
    ),
    Mutant(
        "converter.qkv_order", CONVERTER,
        'for p in ("q", "k", "v")', 'for p in ("k", "q", "v")',
        "packed q/k/v split in the wrong order",
    ),
    Mutant(
        "converter.visual_projection_not_transposed", CONVERTER,
        '_Rule("clip.visual.proj", ("visual_projection.weight",), _transpose),',
        '_Rule("clip.visual.proj", ("visual_projection.weight",), _same),',
        "CLIP's visual projection copied without transposing",
    ),
    Mutant(
        "converter.heads_from_width", CONVERTER,
        '"num_attention_heads": text_width // 64,', '"num_attention_heads": text_width // 32,',
        "text heads counted as width / 32",
    ),
    Mutant(
        "converter.module_prefix_kept", CONVERTER,
        'return {key.removeprefix("module."): value for key, value in state_dict.items()}',
        "return dict(state_dict)",
        "checkpoints saved from DistributedDataParallel (module. prefix) no longer convert",
    ),
    Mutant(
        "converter.no_float_cast", CONVERTER,
        "rule.transform(original[rule.original].float())", "rule.transform(original[rule.original])",
        "float16 tensors of the release kept in float16 in the converted state dict",
        equivalent="load_state_dict copies into the float32 parameters of the model, which casts exactly as .float()",
    ),
    # ---------------------------------------------------------------------------------------------------------
    # Frame sampling and processing
    # ---------------------------------------------------------------------------------------------------------
    Mutant(
        "sampling.drop_threshold", SAMPLING,
        "if delta < -1.1:", "if delta < -0.6:",
        "ffmpeg's frame-drop threshold moved",
    ),
    Mutant(
        "sampling.drift_not_reset", SAMPLING,
        "        if drift < 0 < delta:\n            drift = 0\n", "",
        "negative drift of a frame that still covers the slot is not reset",
        equivalent="drift is read only by `drift > 1.1` afterwards, which a negative drift and 0 both fail",
    ),
    Mutant(
        "sampling.end_repeats_minimum", SAMPLING,
        "sorted(recent_previous_repeats)[1]", "sorted(recent_previous_repeats)[0]",
        "end-of-stream repeats: minimum instead of median",
    ),
    Mutant(
        "sampling.linspace_off_by_one", SAMPLING,
        "step = np.float64(stop) / np.float64(num - 1)", "step = np.float64(stop) / np.float64(num)",
        "linspace step computed over num instead of num - 1 intervals",
    ),
    Mutant(
        "sampling.float_rate", SAMPLING,
        "Fraction(repr(float(sampling_fps)))", "float(sampling_fps)",
        "kept-image count computed in floating point (50 images at 2.3 fps keep 22)",
    ),
    Mutant(
        "sampling.no_second_pass_when_equal", SAMPLING,
        "if num_kept <= max_frames:", "if num_kept < max_frames:",
        "second linspace pass also when exactly max_frames images are kept",
        equivalent="with num_kept == max_frames the second pass picks linspace(0, n - 1, n) = every image, and the "
        "jitter's half gap is 0",
    ),
    Mutant(
        "sampling.jitter_threshold", SAMPLING,
        "if half_gap > 2:", "if half_gap > 1:",
        "training jitter also for half gaps of 2",
    ),
    Mutant(
        "sampling.repeats_kept", SAMPLING,
        "return sorted({runs[run][0] for run in run_of_position.tolist()})",
        "return [runs[run][0] for run in run_of_position.tolist()]",
        "a source frame duplicated by ffmpeg is fed to the model twice",
    ),
    Mutant(
        "sampling.position_to_wrong_run", SAMPLING,
        'np.searchsorted(run_starts, positions, side="right") - 1',
        'np.searchsorted(run_starts, positions, side="left") - 1',
        "an image at the start of a run is mapped to the previous run's frame",
    ),
    Mutant(
        "sampling.previous_frame_not_shown", SAMPLING,
        "shown_previous = min(previous_repeats, repeats) if index > 0 else 0",
        "shown_previous = 0",
        "ffmpeg's gap-filling images show the new frame instead of the previous one",
    ),
    Mutant(
        "processing.timestamps_times_fps", VIDEO_PROCESSING,
        (
            "timestamps = [i / metadata.fps for i in indices] if metadata.fps else [math.nan] * len(indices)",
            "timestamps = [positions[i] / rate for i in indices] if rate else [math.nan] * len(indices)",
        ),
        (
            "timestamps = [i * metadata.fps for i in indices] if metadata.fps else [math.nan] * len(indices)",
            "timestamps = [positions[i] * rate for i in indices] if rate else [math.nan] * len(indices)",
        ),
        "frame timestamps of frame arrays multiplied by the rate",
    ),
    Mutant(
        "processing.vfr_average_rate_for_nominal", DECODING,
        "nominal_fps=float(stream.guessed_rate or 0) or average_fps,", "nominal_fps=average_fps,",
        "a frame without a usable duration lasts one frame of the average rate, not ffmpeg's nominal one",
    ),
    Mutant(
        "processing.vfr_fallback_duration_uncapped", SAMPLING,
        "nominal_slots = min(output_fps / nominal_fps, 1.0)", "nominal_slots = output_fps / nominal_fps",
        "a frame of a slow nominal rate may cover more than one 5 fps slot",
    ),
    Mutant(
        "processing.avi_empty_chunks_counted_missing", DECODING,
        'if container.format.name == "avi":', "if False:",
        "an AVI whose dropped frames are empty chunks is refused as truncated",
    ),
    Mutant(
        "processing.alpha_kept_red_dropped", VIDEO_INPUTS,
        "return frames[..., :3]", "return frames[..., 1:]",
        "RGBA frames lose red instead of alpha",
    ),
    Mutant(
        "processing.pad_to_max_frames_inverted", VIDEO_PROCESSING,
        "num_slots = num_frames if pad_to_max_frames else max(len(clip) for clip in processed)",
        "num_slots = max(len(clip) for clip in processed) if pad_to_max_frames else num_frames",
        "pad_to_max_frames has the opposite effect",
    ),
    Mutant(
        "processing.caption_unescaped_once", PROCESSOR,
        "caption = html.unescape(html.unescape(caption))", "caption = html.unescape(caption)",
        "captions HTML-unescaped once where OpenAI's tokenizer does it twice",
    ),
    Mutant(
        "processing.caption_whitespace_kept", PROCESSOR,
        'return re.sub(r"\\s+", " ", caption).strip()', "return caption.strip()",
        "runs of whitespace in captions not collapsed",
    ),
    Mutant(
        "processing.caption_length", PROCESSOR,
        'text_kwargs = {"padding": "max_length", "truncation": True, "max_length": 32}',
        'text_kwargs = {"padding": "max_length", "truncation": True, "max_length": 77}',
        "captions padded to 77 tokens instead of the paper's 32",
    ),
    # ---------------------------------------------------------------------------------------------------------
    # Training: contrastive all-gather, loop, evaluation, metrics
    # ---------------------------------------------------------------------------------------------------------
    Mutant(
        "contrastive.gradient_not_summed", CONTRASTIVE,
        "        dist.all_reduce(grad_output, op=dist.ReduceOp.SUM)\n", "",
        "all-gather backward keeps only this process's gradient",
    ),
    Mutant(
        "contrastive.wrong_slice", CONTRASTIVE,
        "start = ctx.rank * ctx.local_size", "start = 0",
        "every process takes the first process's gradient slice",
    ),
    Mutant(
        "contrastive.aligned_pair_swapped", CONTRASTIVE,
        "aligned_embeds=None if embeddings.video_aligned is None else gather_with_gradient(embeddings.video_aligned),",
        "aligned_embeds=None if embeddings.video_aligned is None else gather_with_gradient(embeddings.text_aligned),",
        "the videos' aligned embeddings replaced by the captions'",
    ),
    Mutant(
        "run.logit_scale_clamp_removed", CONTRASTIVE,
        "                parameter.clamp_(max=MAX_LOGIT_SCALE)\n", "                pass\n",
        "the logit scale is no longer capped at ln 100 after each optimizer step",
    ),
    Mutant(
        "run.logit_scale_clamp_not_called", RUN,
        "            clamp_logit_scale(embedder)\n", "",
        "the training loop never calls the logit-scale cap",
    ),
    Mutant(
        "contrastive.logit_scale_cap_raised", CONTRASTIVE,
        "MAX_LOGIT_SCALE = math.log(100.0)", "MAX_LOGIT_SCALE = math.log(1000.0)",
        "the logit scale capped at ln 1000",
    ),
    Mutant(
        "contrastive.loss_scale_not_capped", CONTRASTIVE,
        "logit_scale = self.model.logit_scale.clamp(max=MAX_LOGIT_SCALE)", "logit_scale = self.model.logit_scale",
        "the loss uses the stored logit scale even above the cap",
    ),
    Mutant(
        "run.evaluation_videos_by_captions", EVALUATION,
        "similarity = (logit_scale.float().exp().cpu() * text @ videos.t()).numpy()",
        "similarity = (logit_scale.float().exp().cpu() * videos @ text.t()).numpy()",
        "evaluation similarity built as videos x captions",
    ),
    Mutant(
        "run.loss_weight_ignored", RUN,
        "weight = model.config.global_similarity_weight if model.config.use_temporal_alignment_block else 1.0",
        "weight = 0.5 if model.config.use_temporal_alignment_block else 1.0",
        "training loss ignores the configured global_similarity_weight",
    ),
    Mutant(
        "run.zero_grad_dropped", RUN,
        "                optimizer.zero_grad()\n", "",
        "gradients accumulate across optimizer steps",
    ),
    Mutant(
        "run.schedule_not_stepped", RUN,
        "                scheduler.step()\n", "",
        "the learning-rate schedule never advances",
    ),
    Mutant(
        "run.decay_on_vectors", RECIPES,
        "decays = parameter.ndim >= 2 and name not in embedding_weights",
        "decays = parameter.ndim >= 1 and name not in embedding_weights",
        "biases and norms decayed",
    ),
    Mutant(
        "run.clip_rate_inverted", RECIPES,
        '"lr": learning_rate * (clip_learning_rate_scale if is_clip else 1.0),',
        '"lr": learning_rate * (1.0 if is_clip else clip_learning_rate_scale),',
        "the new modules learn at CLIP's reduced rate and CLIP at the full one",
    ),
    Mutant(
        "metrics.optimistic_ties", METRICS,
        "return (similarity >= own_score[:, None]).sum(axis=1)",
        "return 1 + (similarity > own_score[:, None]).sum(axis=1)",
        "text-to-video ties ranked optimistically",
    ),
    Mutant(
        "metrics.recall_strict", METRICS,
        "np.mean(ranks <= k)", "np.mean(ranks < k)",
        "R@K counts ranks below K only",
    ),
    Mutant(
        "metrics.median_is_mean", METRICS,
        'summary[f"{prefix}MedianR"] = float(np.median(ranks))', 'summary[f"{prefix}MedianR"] = float(np.mean(ranks))',
        "median rank computed as the mean",
    ),
    Mutant(
        "metrics.v2t_wrong_axis", METRICS,
        "return (best_per_video >= best_own[None, :]).sum(axis=0)",
        "return (best_per_video >= best_own[:, None]).sum(axis=1)",
        "video-to-text ranks counted along the wrong axis",
    ),
    Mutant(
        "metrics.dsl_axes_swapped", METRICS,
        "text_to_video_similarity = similarity * _softmax(scaled, axis=0)",
        "text_to_video_similarity = similarity * _softmax(scaled, axis=1)",
        "dual softmax for text-to-video taken over the videos",
    ),
    Mutant(
        "metrics.captions_candidates_off_by_one", METRICS,
        "return 1 + ((similarity >= best_own[None, :]) & is_other_caption).sum(axis=0)",
        "return ((similarity >= best_own[None, :]) & is_other_caption).sum(axis=0)",
        "'captions' video-to-text ranks start at 0",
    ),
    # ---------------------------------------------------------------------------------------------------------
    # Search, pipelines, endpoint handler
    # ---------------------------------------------------------------------------------------------------------
    Mutant(
        "search.worst_first", SEARCH,
        "order = np.lexsort((rows, -scores), axis=1)", "order = np.lexsort((rows, scores), axis=1)",
        "exact search returns the lowest scores first",
    ),
    Mutant(
        "search.ties_by_higher_row", SEARCH,
        "order = np.lexsort((rows, -scores), axis=1)", "order = np.lexsort((-rows, -scores), axis=1)",
        "exact search breaks ties by the higher row",
    ),
    Mutant(
        "search.exact_scores_unscaled", SEARCH,
        "return self.logit_scale * inner, rows", "return inner, rows",
        "exact search returns cosine similarities instead of the model's logits",
    ),
    Mutant(
        "search.best_moment_least_similar", SEARCH,
        "best = int(np.argmax(similarities))", "best = int(np.argmin(similarities))",
        "a hit's best moment is its least similar frame",
    ),
    Mutant(
        "pipelines.rank_labels_not_sorted", PIPELINES,
        "ranked = sorted(zip(scores.tolist(), range(len(labels))), key=lambda pair: (-pair[0], pair[1]))",
        "ranked = list(zip(scores.tolist(), range(len(labels))))",
        "zero-shot labels returned in request order",
    ),
    Mutant(
        "pipelines.rank_labels_sigmoid", PIPELINES,
        ("scores = logits.softmax(dim=-1)",
         'scores = logits.softmax(dim=-1) if function_to_apply == "softmax" else logits'),
        ("scores = logits.sigmoid()", 'scores = logits.sigmoid() if function_to_apply == "softmax" else logits'),
        "zero-shot scores are per-label sigmoids, not a softmax over the labels",
    ),
    Mutant(
        "pipelines.retrieval_ascending", PIPELINES,
        'results.sort(key=lambda result: (-result["score"], result["index"]))',
        'results.sort(key=lambda result: (result["score"], result["index"]))',
        "retrieval returns the worst video first",
    ),
    Mutant(
        "handler.texts_in_ranked_order", HANDLER,
        'answers[index]["scores"] = [{"text": text, "score": by_label[text]} for text in request["texts"]]',
        'answers[index]["scores"] = [{"text": item["label"], "score": item["score"]} for item in result]',
        "the handler's per-text scores come back ranked instead of in the order given",
    ),
]


@dataclass
class Result:
    name: str
    path: str
    description: str
    outcome: str  # caught / survived / not applicable / equivalent (survived) / equivalent (caught)
    seconds: float = 0.0
    detail: str = ""
    tests: list[str] = field(default_factory=list)


def extract_tree(ref: str, destination: Path) -> str:
    """`git archive ref` of the repository into `destination`; returns the commit it resolved to."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", ref], capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryFile() as archive:
        subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit], stdout=archive, check=True)
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            tar.extractall(destination, filter="data")
    return commit


def make_import_shim(tree: Path, shim: Path) -> None:
    """`shim/clip2video/<folder>` -> `tree/<folder>`: with `shim` first on PYTHONPATH, `clip2video.<folder>` imports
    the private copy (a namespace package, as the editable install maps it)."""
    package = shim / "clip2video"
    package.mkdir(parents=True)
    for folder in PACKAGE_FOLDERS:
        if (tree / folder).is_dir():
            (package / folder).symlink_to(tree / folder, target_is_directory=True)


def test_environment(workdir: Path, shim: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(shim), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        # A mutant can have the size of the original and be written within the same second: a stale .pyc would
        # hide it. Nothing is cached.
        PYTHONDONTWRITEBYTECODE="1",
        # Remote-code tests copy the (mutated) modules into transformers' module cache: a private one, so that the
        # repository's own test runs never import a mutant.
        HF_HOME=str(workdir / "hf_home"),
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def check_imports_the_copy(tree: Path, env: dict[str, str]) -> None:
    code = (
        "import clip2video.modeling_clip2video as m, clip2video.processing as p, clip2video.training as t\n"
        "print(m.__file__); print(p.__file__); print(t.__path__[0])"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"cannot import the private copy:\n{result.stderr}")
    for line in result.stdout.split():
        if not Path(line).resolve().is_relative_to(tree.resolve()):
            raise SystemExit(f"the tests would import {line}, not the private copy in {tree}")
    print(f"tests import the private copy: clip2video.modeling_clip2video.__file__ = {result.stdout.split()[0]}")


def run_tests(tests: list[str], tree: Path, env: dict[str, str], timeout: float) -> tuple[str, float, str]:
    """('passed' | 'failed' | 'timeout', seconds, last lines of output)."""
    command = ["nice", "-n", "10", sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)  # the test process and everything it started (accelerate, fresh interpreters)
        process.communicate()
        return "timeout", time.perf_counter() - started, ""
    seconds = time.perf_counter() - started
    tail = "\n".join(output.strip().splitlines()[-3:])
    return ("passed" if process.returncode == 0 else "failed"), seconds, tail


_GAP = r"(?:\s|\\\n)*"  # whitespace, line breaks and backslash continuations
_WORD_GAP = r"(?:\s|\\\n)+"


def _is_word(token: str) -> bool:
    return token[0].isalnum() or token[0] == "_"


def snippet_pattern(snippet: str) -> re.Pattern:
    """A pattern matching `snippet` however a formatter lays it out: any whitespace (line breaks and indentation
    included) between its tokens (some between two names or numbers), either quote character for a quote, an
    optional trailing comma before a closing bracket. Names, numbers and operators must stay as written, so a match
    is the same code."""
    tokens = re.findall(r"\w+|\S", snippet)
    parts = []
    for index, token in enumerate(tokens):
        if index:
            parts.append(_WORD_GAP if _is_word(tokens[index - 1]) and _is_word(token) else _GAP)
        if token in ("'", '"'):
            parts.append(r"""['"]""")
        elif token in ")]}":
            parts.append(f"(?:,{_GAP})?" + re.escape(token))
        else:
            parts.append(re.escape(token))
    # A snippet that starts or ends with a name must not match inside a longer name.
    head = r"(?<!\w)" if tokens and _is_word(tokens[0]) else ""
    tail = r"(?!\w)" if tokens and _is_word(tokens[-1]) else ""
    return re.compile(head + "".join(parts) + tail)


def occurrences(text: str, snippet: str) -> list[re.Match]:
    """Where `snippet` occurs in `text`, formatting aside (`snippet_pattern`)."""
    return list(snippet_pattern(snippet).finditer(text))


def find_once(text: str, snippets: str | tuple[str, ...]) -> tuple[int, re.Match] | None:
    """The first of `snippets` (successive versions of the same code) that occurs exactly once: (its index, where)."""
    for index, snippet in enumerate(snippets if isinstance(snippets, tuple) else (snippets,)):
        found = occurrences(text, snippet)
        if len(found) == 1:
            return index, found[0]
    return None


def _indentation(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def mutated_text(text: str, mutant: Mutant) -> str | None:
    """`text` with the mutant planted, or None when none of its snippets occurs exactly once, or when the planted
    code is not valid Python (a replacement that no longer fits the reformatted code)."""
    found = find_once(text, mutant.original)
    if found is None:
        return None
    index, match = found
    original = (mutant.original if isinstance(mutant.original, tuple) else (mutant.original,))[index]
    replacement = (mutant.replacement if isinstance(mutant.replacement, tuple) else (mutant.replacement,))[index]
    # The match starts and ends at the snippet's first and last token: drop the whitespace around the replacement
    # that stands for the whitespace around the snippet.
    lead = original[: len(original) - len(original.lstrip())]
    trail = original[len(original.rstrip()):]
    if replacement.startswith(lead) and replacement.endswith(trail) and len(replacement) >= len(lead) + len(trail):
        replacement = replacement[len(lead): len(replacement) - len(trail)]
    else:
        replacement = replacement.strip()
    if "\n" in replacement:
        # Lines after the first move with the code: by how much its first line's indentation changed.
        line_start = text.rfind("\n", 0, match.start()) + 1
        before = text[line_start: match.start()]
        if not before.strip():
            written = _indentation(lead.rsplit("\n", 1)[-1])
            shift = len(before) - written
            lines = replacement.split("\n")
            moved = [lines[0]]
            for line in lines[1:]:
                if shift >= 0:
                    moved.append(" " * shift + line if line.strip() else line)
                else:
                    moved.append(line[min(-shift, _indentation(line)):])
            replacement = "\n".join(moved)
    planted = text[: match.start()] + replacement + text[match.end():]
    try:
        compile(planted, mutant.path, "exec")
    except SyntaxError:
        return None
    return planted


def plant(tree: Path, mutant: Mutant) -> str | None:
    """Writes the mutant into the copy; returns the original text, or None when the snippet is not there once."""
    source = tree / mutant.path
    if not source.is_file():
        return None
    text = source.read_text()
    planted = mutated_text(text, mutant)
    if planted is None:
        return None
    source.write_text(planted)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="HEAD", help="The commit to test (default: HEAD).")
    parser.add_argument("--only", action="append", help="Run the mutants whose name matches this glob (repeatable).")
    parser.add_argument("--list", action="store_true", help="Print the catalogue and exit.")
    parser.add_argument("--workdir", help="Where to put the private copy (default: a new temporary folder).")
    parser.add_argument("--json", help="Also write the results to this JSON file.")
    parser.add_argument("--timeout_factor", type=float, default=3.0,
                        help="A mutant's tests may take this times the unmutated run (plus 60 s) before they count "
                        "as caught by a timeout.")
    parser.add_argument("--required_kill_rate", type=float, default=95.0)
    args = parser.parse_args(argv)

    mutants = [m for m in MUTANTS if not args.only or any(fnmatch.fnmatch(m.name, p) for p in args.only)]
    if args.list:
        applicable = 0
        for mutant in mutants:
            source = subprocess.run(
                ["git", "-C", str(REPO), "show", f"{args.ref}:{mutant.path}"], capture_output=True, text=True
            ).stdout
            found = mutated_text(source, mutant) is not None
            applicable += found
            flag = f"  [equivalent: {mutant.equivalent}]" if mutant.equivalent else ""
            state = "" if found else f"  NOT APPLICABLE at {args.ref}"
            print(f"{mutant.name:48} {mutant.path}{state}\n    {mutant.description}{flag}")
        print(f"{len(mutants)} mutants, {applicable} applicable at {args.ref}")
        return 0
    if not mutants:
        raise SystemExit(f"no mutant matches {args.only}")

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="clip2video-mutation-")).resolve()
    if workdir.exists() and any(workdir.iterdir()):
        shutil.rmtree(workdir)
    tree, shim = workdir / "tree", workdir / "shim"
    tree.mkdir(parents=True)
    commit = extract_tree(args.ref, tree)
    make_import_shim(tree, shim)
    env = test_environment(workdir, shim)
    print(f"private copy of {args.ref} ({commit[:10]}) in {tree}")
    check_imports_the_copy(tree, env)

    # The unmutated tests must pass, each file once; their time sets each mutant's limit.
    selections = {m.path: [t for t in TESTS_OF[m.path] if (tree / t).is_file()] for m in mutants}
    baseline = {}
    for test in dict.fromkeys(t for tests in selections.values() for t in tests):
        status, seconds, tail = run_tests([test], tree, env, timeout=1800)
        print(f"unmutated {test}: {status} in {seconds:.0f} s", flush=True)
        if status != "passed":
            print(tail)
            return 2
        baseline[test] = seconds

    results = []
    campaign_started = time.perf_counter()
    for number, mutant in enumerate(mutants, 1):
        tests = selections[mutant.path]
        original = plant(tree, mutant)
        if original is None:
            result = Result(mutant.name, mutant.path, mutant.description, "not applicable",
                            detail="snippet not found exactly once")
        else:
            try:
                limit = args.timeout_factor * sum(baseline[test] for test in tests) + 60
                status, seconds, tail = run_tests(tests, tree, env, timeout=limit)
            finally:
                (tree / mutant.path).write_text(original)
            outcome = "survived" if status == "passed" else "caught"
            if mutant.equivalent:
                outcome = f"equivalent ({outcome})"
            detail = "timeout" if status == "timeout" else (tail.splitlines()[-1] if tail else "")
            result = Result(mutant.name, mutant.path, mutant.description, outcome, seconds, detail, tests)
        results.append(result)
        print(f"[{number}/{len(mutants)}] {result.outcome:20} {result.seconds:6.0f} s  {mutant.name}"
              + (f"  ({result.detail})" if result.outcome != "caught" and result.detail else ""), flush=True)

    planted = [r for r in results if r.outcome != "not applicable" and not r.outcome.startswith("equivalent")]
    caught = [r for r in planted if r.outcome == "caught"]
    survived = [r for r in planted if r.outcome == "survived"]
    not_applicable = [r for r in results if r.outcome == "not applicable"]
    equivalent = [r for r in results if r.outcome.startswith("equivalent")]
    kill_rate = 100.0 * len(caught) / len(planted) if planted else 0.0
    print()
    print(f"commit {commit[:10]}, {time.perf_counter() - campaign_started:.0f} s")
    print(f"planted {len(planted)}, caught {len(caught)}, survived {len(survived)}, kill rate {kill_rate:.1f}%")
    print(f"not applicable {len(not_applicable)}, equivalent {len(equivalent)} (not counted)")
    for result in survived:
        print(f"  SURVIVED {result.name}: {result.description}")
    for result in not_applicable:
        print(f"  NOT APPLICABLE {result.name}: {result.path} no longer holds the snippet")
    by_name = {m.name: m for m in MUTANTS}
    for result in equivalent:
        print(f"  EQUIVALENT {result.name} [{result.outcome}]: {by_name[result.name].equivalent}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"commit": commit, "planted": len(planted), "caught": len(caught), "survived": len(survived),
             "not_applicable": len(not_applicable), "equivalent": len(equivalent), "kill_rate": kill_rate,
             "results": [asdict(r) for r in results]}, indent=2))
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if kill_rate >= args.required_kill_rate else 1


if __name__ == "__main__":
    sys.exit(main())

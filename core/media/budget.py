"""The budget planner: what a sampling plan will cost before anything is decoded.

Frames kept, effective fps, timestamp resolution, visual tokens (the Qwen3-VL processor's own
arithmetic), timestamp-text tokens, total prompt tokens, KV-cache bytes and an estimate of peak
GPU memory, with a warning when it will not fit. With the model's processor (`processor=`) the
token counts are exact; without it the text parts are estimated with the Qwen tokenizer's rules
(one token per digit).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from core.media.errors import VideoError
from core.media.probe import VideoInfo
from core.media.sampling import FACTOR, TEMPORAL, FrameSchedule, SamplingPlan, schedule_frames

# parameters (total, vision tower) and text hidden size / vision hidden size of the released Instruct models
MODEL_PARAMS = {
    "2b": dict(params=2.128e9, vision=0.407e9, hidden=2048, vision_hidden=1024, layers=28, vocab_hidden=151936 * 2048),
    "4b": dict(params=4.438e9, vision=0.415e9, hidden=2560, vision_hidden=1024, layers=36, vocab_hidden=151936 * 2560),
    "8b": dict(params=8.767e9, vision=0.576e9, hidden=4096, vision_hidden=1152, layers=36, vocab_hidden=151936 * 4096),
}
# bytes per weight of the language model, and whether the vision tower stays in 16-bit
PRECISIONS = {"bf16": 2.0, "fp16": 2.0, "fp32": 4.0, "fp8": 1.0, "8bit": 1.0, "4bit": 0.5}
_CUDA_CONTEXT = 0.6e9  # CUDA context + allocator slack, not in torch's own peak figures


@dataclass
class BudgetEstimate:
    """What a plan costs on a model. Tokens are exact when `exact` is True (processor given), else estimated."""

    model_size: str
    precision: str
    frames: int
    effective_fps: float
    timestamp_resolution: float
    frame_width: int
    frame_height: int
    pairs: int
    visual_tokens_per_pair: int
    visual_tokens: int
    timestamp_text_tokens: int
    video_tokens: int
    prompt_tokens: int
    max_new_tokens: int
    kv_cache_bytes: int
    weights_bytes: int
    activation_bytes: int
    peak_gpu_bytes: int
    gpu_memory_bytes: int | None
    gpu_name: str | None
    fits: bool | None
    exact: bool
    schedule: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)


def visual_tokens_for(frames: int, height: int, width: int) -> tuple[int, int]:
    """(pairs, tokens per pair) of `frames` frames of height x width (multiples of 32) in Qwen3-VL."""
    pairs = (frames + (-frames % TEMPORAL)) // TEMPORAL
    return pairs, (height // FACTOR) * (width // FACTOR)


def timestamp_text(t: float) -> str:
    """The text the processor puts before a pair of frames at mean time `t`."""
    return f"<{t:.1f} seconds>"


def _estimate_text_tokens(text: str) -> int:
    # Qwen2 tokenizer: '<', one token per digit, '.', ' seconds', '>'
    digits = sum(c.isdigit() for c in text)
    return digits + 4


def weights_bytes(model_size: str, precision: str) -> int:
    """Bytes of the model's weights at `precision` (the vision tower and embeddings stay 16-bit when quantised)."""
    m = MODEL_PARAMS[model_size]
    per = PRECISIONS[precision]
    if precision in ("bf16", "fp16", "fp32"):
        return int(m["params"] * per)
    lm = m["params"] - m["vision"] - m["vocab_hidden"]
    return int(lm * per + (m["vision"] + m["vocab_hidden"]) * 2)


def kv_bytes_per_token(model_size: str, precision: str) -> int:
    """KV-cache bytes one token costs: 2 (K, V) x layers x 8 kv heads x 128 x value size (4 for fp32, else 2)."""
    value = 4 if precision == "fp32" else 2
    return 2 * MODEL_PARAMS[model_size]["layers"] * 8 * 128 * value


def detect_gpu() -> tuple[int | None, str | None]:
    """(total memory bytes, name) of CUDA GPU 0, or (None, None) when there is none."""
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return int(props.total_memory), str(props.name)
    except Exception:  # noqa: BLE001 - no usable torch/driver means no GPU
        pass
    return None, None


def _template_tokens(processor: Any, question: str) -> tuple[int, int]:
    """(tokens of the chat prompt around one video, of which the video placeholder) via the processor's template."""
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    pad = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    return len(ids), sum(1 for i in ids if i == pad)


def plan_budget(info: VideoInfo, plan: SamplingPlan, model_size: str = "4b", precision: str = "bf16",
                gpu_memory_bytes: int | None = None, processor: Any = None, question: str = "",
                max_new_tokens: int = 512, look_for_gpu: bool = True,
                schedule: FrameSchedule | None = None) -> BudgetEstimate:
    """The BudgetEstimate of `plan` on the probed video for a Qwen3-VL `model_size` (2b/4b/8b) at `precision`.

    Never decodes the video. `processor`: the model's processor for exact text-token counts.
    `gpu_memory_bytes`: the memory to fit in (default: the GPU found, if any).
    """
    size = model_size.lower().removesuffix("-instruct")
    if size not in MODEL_PARAMS:
        raise VideoError(f"unknown model size {model_size!r}; choose 2b, 4b or 8b.")
    if precision not in PRECISIONS:
        raise VideoError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    sched = schedule or schedule_frames(info, plan)
    pairs, per_pair = visual_tokens_for(sched.frames, sched.height, sched.width)
    visual = pairs * per_pair
    stamps = [timestamp_text(t) for t in sched.pair_timestamps()]
    if processor is not None:
        tok = processor.tokenizer
        text_tokens = sum(len(tok(s, add_special_tokens=False)["input_ids"]) for s in stamps)
        template, pads = _template_tokens(processor, question)
        overhead = template - pads
    else:
        text_tokens = sum(_estimate_text_tokens(s) for s in stamps)
        overhead = 10 + math.ceil(len(question.encode("utf-8")) / 3.5)
    # each pair: <t seconds> <|vision_start|> visual tokens <|vision_end|>
    video_tokens = visual + text_tokens + 2 * pairs
    prompt = overhead + video_tokens

    kv = (prompt + max_new_tokens) * kv_bytes_per_token(size, precision)
    weights = weights_bytes(size, precision)
    m = MODEL_PARAMS[size]
    act_bytes = 4 if precision == "fp32" else 2
    # calibrated on one H200 run (4B bf16, 3,560 prompt tokens: 10.3 GB peak); an estimate
    activations = int(prompt * m["hidden"] * act_bytes * 24 + visual * 4 * m["vision_hidden"] * act_bytes * 16)
    peak = int(weights + kv + activations + _CUDA_CONTEXT)

    warnings = list(sched.warnings)
    name: str | None = None
    if gpu_memory_bytes is None and look_for_gpu:
        gpu_memory_bytes, name = detect_gpu()
    fits: bool | None = None
    if gpu_memory_bytes:
        fits = peak <= gpu_memory_bytes
        if not fits:
            warnings.append(
                f"needs about {peak / 1024**3:.1f} GiB but {name or 'the GPU'} has {gpu_memory_bytes / 1024**3:.1f} GiB: "
                "lower max_frames or total_pixels, use a smaller model, or quantise (8bit/4bit)."
            )
    else:
        warnings.append("no GPU found: memory fit not checked (give the GPU's memory size to check it)")
    if prompt > 262144:
        warnings.append(f"{prompt} prompt tokens exceed the model's 262,144-token context; lower max_frames.")
    return BudgetEstimate(
        model_size=size, precision=precision, frames=sched.frames, effective_fps=sched.effective_fps,
        timestamp_resolution=sched.timestamp_resolution, frame_width=sched.width, frame_height=sched.height,
        pairs=pairs, visual_tokens_per_pair=per_pair, visual_tokens=visual, timestamp_text_tokens=text_tokens,
        video_tokens=video_tokens, prompt_tokens=prompt, max_new_tokens=max_new_tokens, kv_cache_bytes=kv,
        weights_bytes=weights, activation_bytes=activations, peak_gpu_bytes=peak, gpu_memory_bytes=gpu_memory_bytes,
        gpu_name=name, fits=fits, exact=processor is not None, schedule=sched.to_dict() | {"indices": [], "times": []},
        warnings=warnings,
    )

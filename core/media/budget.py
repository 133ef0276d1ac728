"""The budget planner: what a sampling plan will cost before anything is decoded, and the plan that fits.

Frames kept, effective fps, timestamp resolution, visual tokens (the Qwen3-VL processor's own
arithmetic), timestamp-text tokens, total prompt tokens, KV-cache bytes and an estimate of peak
GPU memory (or RAM on the CPU), with a warning when it will not fit. With the model's processor
(`processor=`) the token counts are exact; without it the text parts are estimated with the Qwen
tokenizer's rules (one token per digit).

`fit_plan` searches a small ladder of plans (fewer frames, fewer pixels per frame) for the one with
the most visual tokens whose peak fits the memory `device_memory` reads; `lower_plan` is one step
down that ladder (the retry after running out of memory anyway).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field, replace
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


def _add_known_shapes() -> None:
    """Every released shape core.vlm.shapes knows (Qwen3-VL 2B ... 32B and 30B-A3B, Qwen3.5 0.8B ... 27B and 35B-A3B,
    keyed "qwen3-vl-8b", "qwen3.5-9b", ...), and the architecture's numbers on the original three sizes: KV-cache
    layers, heads and head size, the fixed recurrent state (Qwen3.5), DeepStack levels, parameters read per token."""
    from core.vlm.shapes import SHAPES, shape_entry

    for key in SHAPES:
        MODEL_PARAMS.setdefault(key, shape_entry(key))
    for size in ("2b", "4b", "8b"):
        MODEL_PARAMS[size] = {**shape_entry(f"qwen3-vl-{size}"), **MODEL_PARAMS[size]}


_add_known_shapes()

# bytes per weight of the language model, and whether the vision tower stays in 16-bit
PRECISIONS = {"bf16": 2.0, "fp16": 2.0, "fp32": 4.0, "fp8": 1.0, "8bit": 1.0, "4bit": 0.5}
_CUDA_CONTEXT = 0.6e9  # CUDA context + allocator slack, not in torch's own peak figures
RESERVE_BYTES = int(_CUDA_CONTEXT)
DEFAULT_PREFILL_CHUNK = 8192  # the `prefill_chunk_tokens` setting's default
MLP_CHUNK_TOKENS = 8192  # as core.vlm.chunked_mlp.CHUNK_TOKENS: the MLP over long prompts, this many tokens at a time
CONTEXT_TOKENS = 262144
PATCH_VALUES = 3 * TEMPORAL * 16 * 16  # values of one 16x16 patch over a pair of frames (the processor's rows)
# the plans fit_plan tries: frame counts, and per-frame pixel caps in visual tokens (of 32x32 pixels)
FRAME_LADDER = (768, 512, 384, 256, 128, 64, 32, 16, 8, 4, 2)
TOKEN_LADDER = (768, 512, 384, 256, 192, 128)
GIB = 1024**3


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
    pixel_bytes: int = 0
    """the frames' pixels as the processor hands them to the model (fp32 patches), held for the whole request"""
    vision_feature_bytes: int = 0
    """the vision tower's output (and its deepstack features) that the prefill reads"""
    prefill_chunk_tokens: int = 0
    """tokens per prefill pass the activations were counted for (the whole prompt when 0)"""
    kv_copies: int = 1
    """KV caches alive at once while decoding (the kept video prefix and the copy a request decodes into)"""
    fit_message: str = ""
    """the sentence saying it will not fit (also in `warnings`), empty when it fits or was not checked"""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)

    def describe(self) -> str:
        """The plan in a user's words: '768 frames of 480x256 (46,080 visual tokens)'."""
        return f"{self.frames} frames of {self.frame_width}×{self.frame_height} ({self.visual_tokens:,} visual tokens)"


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
    """KV-cache bytes one token costs: 2 (K, V) x layers x kv heads (8) x head size (128) x value size (4 for fp32,
    else 2). Only full-attention layers count: one in four in Qwen3.5 (its Gated DeltaNet layers: `state_bytes`)."""
    value = 4 if precision == "fp32" else 2
    m = MODEL_PARAMS[model_size]
    return 2 * m.get("kv_layers", m["layers"]) * m.get("kv_heads", 8) * m.get("head_dim", 128) * value


def state_bytes(model_size: str, precision: str) -> int:
    """Bytes of the fixed state one sequence keeps whatever its length: Qwen3.5's Gated DeltaNet layers' recurrent
    (float32) and convolution states (49.5 MiB on the 4B and 9B in bf16); 0 for Qwen3-VL."""
    m = MODEL_PARAMS[model_size]
    return int(m.get("state_bytes_fp32" if precision == "fp32" else "state_bytes_bf16", 0))


def decode_bytes_per_token(model_size: str, precision: str) -> int:
    """Weight bytes one decoded token reads at batch 1: every language-model weight for a dense model, only the
    router's top-k experts (+ the shared one) for a mixture of experts, whose other experts stay resident unread.
    Device bandwidth / this is the decode speed's memory-bound limit."""
    m = MODEL_PARAMS[model_size]
    active = m.get("active", m["params"] - m["vision"])
    per = PRECISIONS[precision]
    if precision in ("bf16", "fp16", "fp32"):
        return int(active * per)
    return int((active - m["vocab_hidden"]) * per + m["vocab_hidden"] * 2)  # the output head stays 16-bit


def planner_size(model_size: str) -> str | None:
    """The MODEL_PARAMS key for a size or model name: "4b", "qwen3.5-9b", "Qwen/Qwen3-VL-30B-A3B-Thinking" (a
    Thinking or quantised checkpoint has its model's shape), or a key `size_from_config` added; None if unknown."""
    size = model_size.strip().lower().removesuffix("-instruct")
    if size in MODEL_PARAMS:
        return size
    from core.vlm.shapes import shape_key

    key = shape_key(model_size)
    return key if key in MODEL_PARAMS else None


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
    from core.vlm.features import expand_video

    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    text = expand_video(processor, text, processor.video_token)  # the wrapper the processor drops, dropped
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    pad = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    return len(ids), sum(1 for i in ids if i == pad)


def plan_budget(info: VideoInfo, plan: SamplingPlan, model_size: str = "4b", precision: str = "bf16",
                gpu_memory_bytes: int | None = None, processor: Any = None, question: str = "",
                max_new_tokens: int = 512, look_for_gpu: bool = True,
                schedule: FrameSchedule | None = None, prefill_chunk_tokens: int = DEFAULT_PREFILL_CHUNK,
                kv_copies: int = 2, where: str = "GPU", encode_frames: int = 0) -> BudgetEstimate:
    """The BudgetEstimate of `plan` on the probed video for a Qwen3-VL `model_size` (2b/4b/8b) at `precision`.

    Never decodes the video. `processor`: the model's processor for exact text-token counts.
    `gpu_memory_bytes`: the memory to fit in (default: the GPU found, if any); `where` names it
    ("GPU" or "RAM"; on "RAM" the decoded frames count too). The peak is the weights, the frames'
    pixels and a reserve, plus the largest of three phases: the vision tower over a chunk of frames,
    the prefill of one chunk of `prefill_chunk_tokens` tokens (0: the whole prompt at once) over the
    prompt's KV cache, and decoding with `kv_copies` KV caches (2 while a kept video prefix is copied
    for the request on transformers' path; 1 on the fast decoder, which decodes in the kept prefix itself, or with
    `prefix_cache_gb` = 0). `encode_frames`: frames whose pixels are on the device at once (a visual-memory ingest
    encodes a part at a time; 0: all of them).
    """
    size = planner_size(model_size) or ""
    if not size:
        raise VideoError(f"unknown model size {model_size!r}; choose 2b, 4b or 8b (Qwen3-VL) or a known model such as "
                         "qwen3-vl-30b-a3b or qwen3.5-9b.")
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

    per_token = kv_bytes_per_token(size, precision)
    state = state_bytes(size, precision)  # Qwen3.5's recurrent layers: fixed, whatever the prompt's length
    kv = (prompt + max_new_tokens) * per_token + state
    weights = weights_bytes(size, precision)
    m = MODEL_PARAMS[size]
    act_bytes = 4 if precision == "fp32" else 2
    pixels = visual * 4 * PATCH_VALUES * 4  # 4 patches of 16x16 per visual token, float32 from the processor
    if 0 < encode_frames < sched.frames:
        pixels = pixels * encode_frames // sched.frames
    if where == "RAM":
        pixels += sched.frames * sched.width * sched.height * 3  # the decoded frames, in the same memory
    features = visual * m["hidden"] * act_bytes * (1 + m.get("deepstack", 3))  # merged output + DeepStack levels
    hidden = m["hidden"]

    def text_act_of(chunk: int) -> int:
        # the MLP's three (tokens x intermediate) activations run MLP_CHUNK_TOKENS at a time (core.vlm.chunked_mlp);
        # the attention's q/k/v and the hidden states grow with the chunk (H200, 4B, 49,971 tokens in one pass:
        # 2.7 GiB; 3,560 tokens: the 10.3 GB peak the factors were first calibrated on) + a chunk's mask
        return (chunk * hidden * act_bytes * 12 + min(chunk, MLP_CHUNK_TOKENS) * hidden * act_bytes * 12
                + (chunk * prompt if chunk < prompt else 0))

    # one pass over the whole prompt, as the engine runs it while the memory has room for it; else in chunks
    chunk = prompt
    one_pass = weights + _CUDA_CONTEXT + pixels + features + prompt * per_token + state + text_act_of(prompt)
    if 0 < prefill_chunk_tokens < prompt and gpu_memory_bytes and one_pass > gpu_memory_bytes:
        chunk = prefill_chunk_tokens
    if 0 < encode_frames < sched.frames:  # the vision tower runs over one ingest part at a time
        chunk_visual = min(visual, max(per_pair, encode_frames // 2 * per_pair))
    else:
        chunk_visual = min(visual, max(per_pair, chunk // max(1, per_pair) * per_pair))  # whole pairs of frames
    vision_act = chunk_visual * 4 * m["vision_hidden"] * act_bytes * 16
    text_act = text_act_of(chunk)
    activations = int(max(vision_act, text_act))
    phases = (features + vision_act, features + prompt * per_token + state + text_act, kv_copies * kv)
    peak = int(weights + _CUDA_CONTEXT + pixels + max(phases))

    warnings = list(sched.warnings)
    name: str | None = None
    if gpu_memory_bytes is None and look_for_gpu:
        gpu_memory_bytes, name = detect_gpu()
        if gpu_memory_bytes is None:  # no GPU: the model runs on the CPU, so the plan must fit the RAM available
            gpu_memory_bytes, where = _available_ram()[0], "RAM"
    fits: bool | None = None
    fit_message = ""
    if gpu_memory_bytes:
        fits = peak <= gpu_memory_bytes
        if not fits:
            memory = "RAM" if where == "RAM" else f"{name or 'GPU'} memory"
            fit_message = (
                f"needs about {peak / GIB:.1f} GiB but {gpu_memory_bytes / GIB:.1f} GiB of {memory} can be used: "
                "lower max_frames or the pixels per frame, use a smaller model, or quantise (8bit/4bit)."
            )
            warnings.append(fit_message)
    else:
        warnings.append("no GPU found: memory fit not checked (give the GPU's memory size to check it)")
    if prompt > CONTEXT_TOKENS:
        warnings.append(f"{prompt} prompt tokens exceed the model's 262,144-token context; lower max_frames.")
    return BudgetEstimate(
        model_size=size, precision=precision, frames=sched.frames, effective_fps=sched.effective_fps,
        timestamp_resolution=sched.timestamp_resolution, frame_width=sched.width, frame_height=sched.height,
        pairs=pairs, visual_tokens_per_pair=per_pair, visual_tokens=visual, timestamp_text_tokens=text_tokens,
        video_tokens=video_tokens, prompt_tokens=prompt, max_new_tokens=max_new_tokens, kv_cache_bytes=kv,
        weights_bytes=weights, activation_bytes=activations, peak_gpu_bytes=peak, gpu_memory_bytes=gpu_memory_bytes,
        gpu_name=name, fits=fits, exact=processor is not None, schedule=sched.to_dict() | {"indices": [], "times": []},
        warnings=warnings, pixel_bytes=int(pixels), vision_feature_bytes=int(features), prefill_chunk_tokens=chunk,
        kv_copies=kv_copies, fit_message=fit_message,
    )


# ---------------------------------------------------------------------------- the memory to fit in
@dataclass
class DeviceMemory:
    """The memory a plan must fit in: `where` ("GPU" or "RAM"), the bytes it may use, and how they were read."""

    where: str
    free_bytes: int
    total_bytes: int
    name: str | None
    source: str

    def words(self) -> str:
        """'GPU memory (NVIDIA H200)' or 'RAM'."""
        return "RAM" if self.where == "RAM" else f"GPU memory{f' ({self.name})' if self.name else ''}"


def _cuda_memory(device: str) -> tuple[int, int, str] | None:
    """(free, total, name) of the CUDA device `device` ('auto', 'cuda', 'cuda:N') runs on; None on the CPU."""
    if device == "cpu":
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        from core.vlm.loading import cuda_memory

        index = int(device.split(":", 1)[1]) if ":" in device else 0
        free, total = cuda_memory(index)  # within a per-process memory fraction, when one is set
        return free, total, str(torch.cuda.get_device_properties(index).name)
    except Exception:  # noqa: BLE001 - no usable torch/driver means no GPU
        return None


def _available_ram() -> tuple[int, int]:
    """(available, total) bytes of RAM."""
    import psutil

    mem = psutil.virtual_memory()
    return int(mem.available), int(mem.total)


def device_memory(device: str = "auto", held_bytes: int | None = None) -> DeviceMemory:
    """The memory the model's requests can use on `device` (the `device` setting, or a loaded engine's device).

    On CUDA: the free memory plus `held_bytes`, what the loaded model already holds (its weights are
    counted again in every estimate); with no model loaded (`held_bytes` None) the free memory, at
    most the card's total less a reserve. On the CPU: the RAM available, plus `held_bytes`.
    """
    gpu = _cuda_memory(device)
    if gpu is not None:
        free, total, name = gpu
        if held_bytes is not None:
            return DeviceMemory("GPU", free + held_bytes, total, name,
                                f"free GPU memory plus the {held_bytes / GIB:.1f} GiB the loaded model holds")
        return DeviceMemory("GPU", min(free, total - RESERVE_BYTES), total, name, "free GPU memory")
    available, total = _available_ram()
    if held_bytes is not None:
        return DeviceMemory("RAM", available + held_bytes, total, None,
                            f"RAM available plus the {held_bytes / GIB:.1f} GiB the loaded model holds")
    return DeviceMemory("RAM", available, total, None, "RAM available")


def size_from_config(config: Any) -> str | None:
    """The planner's model size for a Qwen3-VL config (a loaded model's `config`, or the dict of a config.json):
    '2b' | '4b' | '8b' for the released shapes (text hidden size and layers), else the shape's own entry, named
    by its parameter count ('1.3b', '5.21m'), added to MODEL_PARAMS from the config; None when it is not a
    Qwen3-VL config."""
    text = _get(config, "text_config") or config
    shape = (_get(text, "hidden_size"), _get(text, "num_hidden_layers"))
    arch = _get(config, "model_type")
    for size, m in MODEL_PARAMS.items():
        if shape == (m["hidden"], m["layers"]) and (not arch or m.get("arch", "qwen3_vl") == arch):
            return size
    entry = _shape_params(config)
    if entry is None:
        return None
    n = entry["params"]
    key = f"{n / 1e9:.3g}b" if n >= 1e9 else f"{n / 1e6:.3g}m"
    if key in MODEL_PARAMS and MODEL_PARAMS[key] != entry:  # another architecture of about that many parameters
        key = f"{key}-{entry.get('arch') or _get(config, 'model_type') or 'qwen3_vl'}"
    MODEL_PARAMS.setdefault(key, entry)
    return key


def size_from_model(model: str) -> str | None:
    """The planner's model size for the `model` setting (a folder or a hub id) from its config.json, read from the
    folder or the local Hugging Face cache (never downloaded, weights never read); None when it cannot be read."""
    import json
    from pathlib import Path

    path = Path(model).expanduser() / "config.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model, "config.json")
        except Exception:  # noqa: BLE001 - not a hub id, or no cache: unknown
            return None
        if not isinstance(found, str):
            return None
        path = Path(found)
    try:
        return size_from_config(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _get(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def _shape_params(config: Any) -> dict[str, Any] | None:
    """A MODEL_PARAMS entry computed from a Qwen3-VL config's shapes (exact for the released models: 2.128e9,
    4.438e9 and 8.767e9 parameters, vision towers 0.407e9, 0.415e9, 0.576e9); None when a shape is missing."""
    if _get(config, "model_type") in ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"):  # exact, any of the four
        from core.vlm.shapes import planner_entry

        try:
            return planner_entry(config)
        except (TypeError, ValueError):
            return None
    t, v = _get(config, "text_config"), _get(config, "vision_config")
    try:
        hidden, layers, inter = int(_get(t, "hidden_size")), int(_get(t, "num_hidden_layers")), int(_get(t, "intermediate_size"))
        vocab, heads = int(_get(t, "vocab_size", 151936)), int(_get(t, "num_attention_heads"))
        kv, head_dim = int(_get(t, "num_key_value_heads", heads)), int(_get(t, "head_dim", None) or hidden // heads)
        vh, depth, vi, vo = (int(_get(v, "hidden_size")), int(_get(v, "depth")), int(_get(v, "intermediate_size")),
                             int(_get(v, "out_hidden_size")))
    except (TypeError, ValueError):
        return None
    tie = bool(_get(config, "tie_word_embeddings", _get(t, "tie_word_embeddings", False)))
    attn = hidden * heads * head_dim + 2 * hidden * kv * head_dim + heads * head_dim * hidden + 2 * head_dim
    text = vocab * hidden * (1 if tie else 2) + layers * (attn + 3 * hidden * inter + 2 * hidden) + hidden
    ps, tp, merge = int(_get(v, "patch_size", 16)), int(_get(v, "temporal_patch_size", 2)), int(_get(v, "spatial_merge_size", 2))
    merged = vh * merge * merge
    merger = merged * merged + merged + merged * vo + vo + 2 * vh
    block = 4 * vh * vh + 8 * vh + 2 * vh * vi + vi + vh
    deep = len(_get(v, "deepstack_visual_indexes", None) or [])
    vision = 3 * tp * ps * ps * vh + vh + int(_get(v, "num_position_embeddings", 2304)) * vh + depth * block \
        + merger * (1 + deep)
    return dict(params=float(text + vision), vision=float(vision), hidden=hidden, vision_hidden=vh, layers=layers,
                vocab_hidden=vocab * hidden, kv_heads=kv, head_dim=head_dim)


def model_bytes(model: Any) -> int:
    """Bytes of a loaded model's parameters and buffers."""
    return int(sum(t.numel() * t.element_size() for t in itertools.chain(model.parameters(), model.buffers())))


# ---------------------------------------------------------------------------- the plan that fits
def ladder_plan(base: SamplingPlan, max_frames: int, max_pixels: int | None = None) -> SamplingPlan:
    """`base` with at most `max_frames` frames and, given `max_pixels`, at most that many pixels per frame.

    The budget over all frames is raised to `max_pixels` x `max_frames` where it is smaller, so the
    per-frame cap is what decides (fewer frames never get more pixels each than `max_pixels`).
    """
    frames = max(TEMPORAL, max_frames)
    plan = replace(base, max_frames=frames, min_frames=min(base.min_frames, frames))
    if max_pixels is None:
        return plan
    px = max(base.min_pixels, min(int(max_pixels), SamplingPlan.max_pixels))
    return replace(plan, max_pixels=px, total_pixels=max(base.total_pixels, px * frames))


def _frame_cap(estimate: BudgetEstimate, plan: SamplingPlan) -> int:
    """The per-frame pixel cap the estimate's schedule used (never above the processor's ceiling)."""
    return min(int(estimate.schedule.get("pixels_per_frame_cap") or plan.max_pixels), SamplingPlan.max_pixels)


def _pixel_steps(base: SamplingPlan, frames: int, cap: int) -> list[SamplingPlan]:
    """`base` at `frames` frames with each per-frame cap of TOKEN_LADDER below `cap` (and above the floor)."""
    floor = int(base.min_pixels * 1.05)  # schedule_frames never goes below this per frame
    steps = [t * FACTOR * FACTOR for t in TOKEN_LADDER]
    return [ladder_plan(base, frames, px) for px in steps if max(px, floor) < cap]


def lower_plan(plan: SamplingPlan, estimate: BudgetEstimate) -> SamplingPlan:
    """One step down the ladder from `plan` (whose estimate is `estimate`), e.g. after running out of memory.

    Fewer frames first (the next count of FRAME_LADDER below the frames kept, at no more pixels
    each); at one pair of frames, the next smaller per-frame pixel cap of TOKEN_LADDER. Never below
    one frame pair or the processor's per-frame floor: `plan` itself when it is already the smallest.
    """
    cap = _frame_cap(estimate, plan)
    fewer = [r for r in FRAME_LADDER if r < estimate.frames]
    if fewer:
        return ladder_plan(plan, fewer[0], cap)
    smaller = _pixel_steps(plan, TEMPORAL, cap)
    return smaller[0] if smaller else plan


def fit_plan(info: VideoInfo, memory_bytes: int | None, model_size: str = "4b", precision: str = "bf16",
             fps: float = 2.0, max_frames: int = 768, window: tuple[float, float] | None = None, *,
             where: str = "GPU", memory_words: str | None = None, fraction: float = 0.9, max_new_tokens: int = 512,
             prefill_chunk_tokens: int = DEFAULT_PREFILL_CHUNK, kv_copies: int = 2, encode_frames: int = 0,
             ) -> tuple[SamplingPlan, BudgetEstimate, list[str]]:
    """The plan with the most visual tokens (then frames) whose estimated peak fits `memory_bytes` x `fraction`.

    The search starts at the standard plan (Qwen3-VL's defaults at `fps`, at most `max_frames`,
    over `window`) and goes down the ladder: fewer frames (FRAME_LADDER) and fewer pixels per frame
    (TOKEN_LADDER, down to the processor's floor of 128 visual tokens); it never asks for more than
    the standard plan. `memory_bytes` None (e.g. a remote engine): the standard plan, unchecked.
    When nothing fits: the standard plan if the weights alone do not fit (fewer frames cannot help),
    else the smallest. Returns (plan, its estimate, plain sentences saying why and what a bigger
    plan would need).
    """
    start, end = window if window is not None else (0.0, info.duration)
    base = SamplingPlan(fps=float(fps), max_frames=int(max_frames), start=start or None,
                        end=None if end >= info.duration else end)
    usable = int(memory_bytes * fraction) if memory_bytes else None
    kw: dict[str, Any] = dict(model_size=model_size, precision=precision, gpu_memory_bytes=usable,
                              max_new_tokens=max_new_tokens, look_for_gpu=False, where=where,
                              prefill_chunk_tokens=prefill_chunk_tokens, kv_copies=kv_copies,
                              encode_frames=encode_frames)
    base_est = plan_budget(info, base, **kw)
    if usable is None or memory_bytes is None:
        return base, base_est, [f"The standard plan, {base_est.describe()}; memory was not checked."]
    words = memory_words or ("RAM" if where == "RAM" else "GPU memory")
    room = (f"{usable / GIB:.1f} GiB of the {memory_bytes / GIB:.1f} GiB of free {words} can be used "
            f"(setting `plan_memory_fraction` = {fraction:g})")
    if base_est.fits:
        return base, base_est, [f"The standard plan, {base_est.describe()}, needs about "
                                f"{base_est.peak_gpu_bytes / GIB:.1f} GiB; {room}: it fits."]
    found: list[tuple[SamplingPlan, BudgetEstimate]] = []
    for frames in [base.max_frames] + [r for r in FRAME_LADDER if r < base_est.frames]:
        # at each frame count: the standard pixel budget (Qwen3-VL's own for that count), then smaller caps
        top = (base, base_est)
        if frames != base.max_frames:
            top = (ladder_plan(base, frames), plan_budget(info, ladder_plan(base, frames), **kw))
            found.append(top)
        found += [(p, plan_budget(info, p, **kw)) for p in _pixel_steps(base, frames, _frame_cap(top[1], base))]
    options: list[tuple[SamplingPlan, BudgetEstimate]] = []
    seen = {(base_est.frames, base_est.frame_width, base_est.frame_height)}
    for plan, est in found:  # plans that sample the same frames at the same size are one option
        if (est.frames, est.frame_width, est.frame_height) not in seen:
            seen.add((est.frames, est.frame_width, est.frame_height))
            options.append((plan, est))
    fitting = [o for o in options if o[1].fits]
    needs = f"The standard plan, {base_est.describe()}, would need about {base_est.peak_gpu_bytes / GIB:.1f} GiB"
    if not fitting:
        if base_est.weights_bytes + RESERVE_BYTES > usable:
            return base, base_est, [
                f"{needs}, but {room}, and the model's weights alone take "
                f"{base_est.weights_bytes / GIB:.1f} GiB: no plan fits. Use a smaller model, quantise it (setting "
                "`quantization` = 8bit or 4bit), or free memory."]
        plan, est = min(options, key=lambda o: o[1].peak_gpu_bytes) if options else (base, base_est)
        return plan, est, [f"{needs}, but {room}: even the smallest plan, {est.describe()}, needs about "
                           f"{est.peak_gpu_bytes / GIB:.1f} GiB; it is used, and may run out of memory."]
    most = max(o[1].visual_tokens for o in fitting)  # within 5% of the most visual tokens, more frames first
    plan, est = max((o for o in fitting if o[1].visual_tokens >= 0.95 * most),
                    key=lambda o: (o[1].frames, o[1].visual_tokens))
    reasons = [f"{needs}, but {room}: {est.describe()} chosen (about {est.peak_gpu_bytes / GIB:.1f} GiB)."]
    # the next plan up: at least as many frames, more visual tokens, not fitting (else it would have been chosen)
    bigger = [o[1] for o in options
              if not o[1].fits and o[1].frames >= est.frames and o[1].visual_tokens > est.visual_tokens]
    if bigger:
        nxt = min(bigger, key=lambda e: (e.visual_tokens, e.peak_gpu_bytes))
        reasons.append(f"The next bigger plan, {nxt.describe()}, would need about {nxt.peak_gpu_bytes / GIB:.1f} GiB.")
    reasons.append("For a bigger plan: free memory, quantise the model (setting `quantization`) or use a smaller one.")
    return plan, est, reasons

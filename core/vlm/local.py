"""The local engine: Qwen3-VL through Hugging Face transformers on this machine's GPU or CPU."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.settings import Settings
from core.vlm.base import (
    Engine,
    EngineError,
    EngineInfo,
    InvalidRequest,
    Ledger,
    ModelUnavailable,
    OutOfMemory,
    RequestRecord,
    TextStream,
)
from core.vlm.types import (
    GenerationParams,
    GenerationResult,
    ImagePart,
    Message,
    Metrics,
    TextPart,
    VideoPart,
    to_rgb_array,
)

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]


def pick_device(requested: str) -> str:
    """`auto` -> `cuda` when a CUDA GPU is usable, else `cpu`; other values are checked."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError(
            f"Setting `device` is {requested!r} but no CUDA GPU is usable here (driver or CUDA build of "
            "torch missing). Set VLSCOPE_DEVICE=auto or cpu."
        )
    return requested


def pick_dtype(requested: str, device: str) -> Any:
    """`auto` -> bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    import torch

    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if requested != "auto":
        return table[requested]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def pick_attention(requested: str, device: str) -> str:
    """`auto` -> flash_attention_2 when the flash-attn package is installed on CUDA, else sdpa."""
    if requested != "auto":
        if requested == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            raise EngineError(
                "Setting `attn_implementation` is flash_attention_2 but the flash-attn package is not "
                "installed. Install the `flash` extra (pip install '.[flash]') or use sdpa."
            )
        return requested
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def dtype_name(dtype: Any) -> str:
    return {"torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.float32": "fp32"}.get(str(dtype), str(dtype))


def resolve_model(model: str, offline: bool) -> Path:
    """Find the model's files: a local folder, the local HF cache, or (when allowed) a download."""
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelUnavailable(model, f"folder {path} has no config.json (not a saved model)")
        return path
    if not _HUB_ID.match(model):
        raise ModelUnavailable(model, f"folder {path} does not exist and it is not a hub id like 'Qwen/Qwen3-VL-4B-Instruct'")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, local_files_only=True, allow_patterns=_WEIGHT_PATTERNS))
    except Exception as exc:  # noqa: BLE001 - any failure means "not in the local cache"
        local_reason = f"{type(exc).__name__}"
    if offline or os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ModelUnavailable(model, "it is not in the local Hugging Face cache and offline mode is on")
    try:
        return Path(snapshot_download(model, allow_patterns=_WEIGHT_PATTERNS))
    except Exception as exc:  # noqa: BLE001
        raise ModelUnavailable(
            model, f"it is not in the local Hugging Face cache ({local_reason}) and could not be fetched ({type(exc).__name__})"
        ) from exc


class _CancelCriteria:
    """Stops generation when the stream is closed or abandoned."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class PresencePenalty:
    """Subtracts `penalty` from the logits of every token already generated (vLLM semantics)."""

    def __init__(self, penalty: float, prompt_length: int) -> None:
        self.penalty = penalty
        self.prompt_length = prompt_length

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        generated = input_ids[:, self.prompt_length:]
        if generated.shape[1] == 0 or self.penalty == 0:
            return scores
        mask = scores.new_zeros(scores.shape, dtype=scores.dtype)
        mask.scatter_(1, generated, 1.0)
        return scores - self.penalty * mask


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


@dataclass
class _Prefix:
    """A kept prefix: its token ids, grids, KV cache and the rope deltas generate needs with it."""

    key: str
    input_ids: Any
    mm_token_type_ids: Any
    grids: dict[str, Any]
    kv: Any
    rope_deltas: Any
    nbytes: int
    cache_kwarg: str


def _cache_nbytes(kv: Any) -> int:
    import torch

    total = 0
    seen: set[int] = set()

    def visit(obj: Any, depth: int = 0) -> None:
        nonlocal total
        if depth > 4 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            total += obj.numel() * obj.element_size()
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item, depth + 1)
        elif hasattr(obj, "__dict__"):
            for item in vars(obj).values():
                visit(item, depth + 1)

    visit(kv)
    return total


@dataclass
class _Job:
    """A request waiting to be served, alone or in a batch with others."""

    inputs: dict[str, Any]
    params: GenerationParams
    streamer: Any
    cancel: threading.Event
    outcome: dict[str, Any]
    done: threading.Event
    times: dict[str, float]
    prompt_length: int

    def batch_signature(self) -> tuple[Any, ...]:
        """Requests batch together only when they decode the same way."""
        p = self.params
        return (p.greedy, p.temperature, p.top_p, p.top_k, p.repetition_penalty, p.presence_penalty)


class PrefixStore:
    """Kept prefix KV caches, bounded in bytes, least recently used evicted first. Thread-safe."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._items: OrderedDict[str, _Prefix] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> _Prefix | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, item: _Prefix) -> None:
        with self._lock:
            self._items[item.key] = item
            self._items.move_to_end(item.key)
            while self._items and self.nbytes > self.limit_bytes:
                self._items.popitem(last=False)

    @property
    def nbytes(self) -> int:
        return sum(i.nbytes for i in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class LocalEngine(Engine):
    """Runs Qwen3-VL with transformers. Load lazily with `load()`; one request at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ledger = Ledger()
        self._model: Any = None
        self._processor: Any = None
        self._device = ""
        self._dtype: Any = None
        self._attn = ""
        self._quant = settings.quantization
        self._error: str | None = None
        self._load_lock = threading.Lock()
        self._gen_lock = threading.Lock()
        self.load_seconds: float | None = None
        self.prefixes = PrefixStore(int(settings.prefix_cache_gb * 1024**3))
        self._fast: Any = None
        self._queue: list[_Job] = []
        self._queue_lock = threading.Lock()

    # -- loading ------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> Any:
        self.load()
        return self._model

    @property
    def processor(self) -> Any:
        self.load()
        return self._processor

    @property
    def generation_lock(self) -> threading.Lock:
        """Held while the model runs; hold it to use the model directly (e.g. cache reuse)."""
        return self._gen_lock

    def load(self) -> None:
        """Load weights and processor once; raises ModelUnavailable or EngineError with the fix."""
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            try:
                self._load()
                self._error = None
            except EngineError as exc:
                self._error = str(exc)
                raise

    def _quantization_config(self, dtype: Any) -> Any:
        if self.settings.quantization == "none":
            return None
        if not self._device.startswith("cuda"):
            raise EngineError(
                f"Setting `quantization` is {self.settings.quantization} but bitsandbytes needs a CUDA GPU. "
                "Set VLSCOPE_QUANTIZATION=none on this machine."
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise EngineError(
                "Setting `quantization` needs the bitsandbytes package: pip install '.[quant]' (or set it to none)."
            )
        from transformers import BitsAndBytesConfig

        skip = ["visual", "lm_head"]  # the vision tower stays unquantised
        if self.settings.quantization == "8bit":
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
            llm_int8_skip_modules=skip,
        )

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        started = time.perf_counter()
        path = resolve_model(self.settings.model, self.settings.offline)
        self._device = pick_device(self.settings.device)
        self._dtype = pick_dtype(self.settings.dtype, self._device)
        self._attn = pick_attention(self.settings.attn_implementation, self._device)
        quant = self._quantization_config(self._dtype)
        kwargs: dict[str, Any] = {"dtype": self._dtype, "attn_implementation": self._attn}
        if quant is not None:
            kwargs["quantization_config"] = quant
            kwargs["device_map"] = self._device if self._device != "cuda" else "cuda:0"
        try:
            processor = AutoProcessor.from_pretrained(str(path))
            model = AutoModelForImageTextToText.from_pretrained(str(path), **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelUnavailable(self.settings.model, f"loading from {path} failed ({type(exc).__name__}: {exc})") from exc
        except torch.OutOfMemoryError as exc:
            raise OutOfMemory("while loading the weights") from exc
        if quant is None:
            model.to(self._device)
        model.eval()
        qcfg = getattr(model.config, "quantization_config", None)
        if qcfg is not None and self.settings.quantization == "none":
            method = qcfg.get("quant_method") if isinstance(qcfg, dict) else getattr(qcfg, "quant_method", "")
            self._quant = f"{method} (checkpoint)"
            if method == "fp8":
                from core.vlm.fp8 import install_offline_fp8_kernel

                # the FP8 matmul kernel normally comes from the hub at the first forward: offline, use ours
                outcome = install_offline_fp8_kernel(force=self.settings.offline)
                self._quant = f"fp8 (checkpoint; {outcome})"
                log.info("FP8 checkpoint: %s", outcome)
        self._model, self._processor = model, processor
        if self.fast_decode_enabled:
            self._fast_decoder()  # set up now (under the load lock), so the first request and info() find it
        self.load_seconds = time.perf_counter() - started
        log.info("loaded %s on %s (%s, %s) in %.1fs", path, self._device, dtype_name(self._dtype), self._attn,
                 self.load_seconds)

    def info(self) -> EngineInfo:
        return EngineInfo(
            backend="local",
            model=self.settings.model,
            loaded=self.loaded,
            device=self._device,
            dtype=dtype_name(self._dtype) if self._dtype is not None else "",
            quantization=self._quant,
            attn_implementation=self._attn,
            error=self._error,
            decoding=self._decoding() if self.loaded else "",
        )

    def _decoding(self) -> str:
        if not self.fast_decode_enabled:
            why = "VLSCOPE_FAST_DECODE=off" if self.settings.fast_decode == "off" else "fast decoding is for CUDA"
            return f"plain generate ({why})"
        fast = self._fast  # read only: info() never builds or changes the decoder
        return "fast: " + (fast.describe() if fast is not None else "set up at the first request")

    @property
    def fast_decode_enabled(self) -> bool:
        """Whether requests decode through the static-cache / CUDA-graph path."""
        mode = self.settings.fast_decode
        return mode == "on" or (mode == "auto" and self._device.startswith("cuda"))

    def _fast_decoder(self) -> Any:
        """The one FastDecoder of this engine (its static caches and graphs are reused across requests)."""
        from core.vlm.fastdecode import FastDecoder

        if self._fast is None:
            self._fast = FastDecoder(self._model, use_cuda_graph=self._device.startswith("cuda"),
                                     compile_step=self.settings.compile_decode)
        return self._fast

    def _fast_generate(self, kw: dict[str, Any], params: GenerationParams, streamer: Any, cancel: threading.Event,
                       prefix: tuple[Any, int, Any] | None) -> Any:
        """Decode with FastDecoder; returns prompt + new ids like `generate` does."""
        import torch

        from core.vlm.fastdecode import make_picker

        self._fast_decoder()
        prompt = kw["input_ids"]
        streamer.put(prompt.cpu())
        inputs = {k: v for k, v in kw.items() if k not in ("past_key_values", "cache")}
        new = self._fast.generate(
            inputs, params.max_new_tokens, make_picker(params, prompt), self._eos_ids(),
            on_tokens=lambda ids: streamer.put(ids.cpu()), should_stop=cancel.is_set, prefix=prefix,
            greedy=params.greedy and params.repetition_penalty == 1.0 and not params.presence_penalty,
        )
        streamer.end()
        return torch.cat([prompt, new], dim=1)

    def close(self) -> None:
        with self._gen_lock:
            self._fast = None
            self.prefixes.clear()
            self._model = None
            self._processor = None
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001
                pass

    # -- inputs -------------------------------------------------------------------------
    def _render(self, messages: list[Message]) -> dict[str, Any]:
        """Chat messages -> prompt text (before token expansion) and the visual parts, in order."""
        if not messages:
            raise InvalidRequest("The request has no messages; ask a question.")
        hf_messages: list[dict[str, Any]] = []
        visual_parts: list[Any] = []
        for message in messages:
            content: list[dict[str, Any]] = []
            for part in message.parts():
                if isinstance(part, TextPart):
                    content.append({"type": "text", "text": part.text})
                elif isinstance(part, ImagePart):
                    content.append({"type": "image"})
                    visual_parts.append(part)
                elif isinstance(part, VideoPart):
                    content.append({"type": "video"})
                    visual_parts.append(part)
                else:
                    raise InvalidRequest(f"Unknown message part {type(part).__name__}")
            hf_messages.append({"role": message.role, "content": content})
        text = self.processor.apply_chat_template(hf_messages, tokenize=False, add_generation_prompt=True)
        return {"text": text, "visual_parts": visual_parts}

    def _process(self, text: str, visual_parts: list[Any]) -> Any:
        """Prompt text + visual parts -> the processor's tensors on the model's device."""
        from transformers.video_utils import VideoMetadata

        processor = self.processor
        images: list[np.ndarray] = []
        videos: list[np.ndarray] = []
        metadata: list[Any] = []
        video_size: dict[str, int] | None = None
        for part in visual_parts:
            if isinstance(part, ImagePart):
                try:
                    images.append(to_rgb_array(part.image))
                except ValueError as exc:
                    raise InvalidRequest(f"Image could not be used: {exc}") from exc
                continue
            try:
                frames = [to_rgb_array(f) for f in part.frames]
            except ValueError as exc:
                raise InvalidRequest(f"Video frame could not be used: {exc}") from exc
            shapes = {f.shape for f in frames}
            if len(shapes) != 1:
                raise InvalidRequest(f"Video frames must all have one size, got {sorted(shapes)}")
            stack = np.stack(frames)
            videos.append(stack)
            total = part.total_frames or (part.frame_indices[-1] + 1)
            metadata.append(
                VideoMetadata(
                    total_num_frames=int(total),
                    fps=float(part.source_fps),
                    width=int(stack.shape[2]),
                    height=int(stack.shape[1]),
                    duration=float(total) / float(part.source_fps),
                    frames_indices=[int(i) for i in part.frame_indices],
                )
            )
            if part.max_pixels_total:
                video_size = {"longest_edge": int(part.max_pixels_total),
                              "shortest_edge": int(part.min_pixels_total or 4096)}
        kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt", "padding": True}
        if images:
            kwargs["images"] = images
        if videos:
            kwargs["videos"] = videos
            kwargs["video_metadata"] = metadata
            kwargs["do_sample_frames"] = False
            if hasattr(type(processor.video_processor), "cap_pixels_per_frame"):
                # the reference (qwen-vl-utils) per-frame pixel cap; transformers >= 5.21 knows it
                kwargs["cap_pixels_per_frame"] = True
            if video_size:
                kwargs["size"] = video_size
        try:
            inputs = processor(**kwargs)
        except ValueError as exc:
            raise InvalidRequest(f"The processor refused the input: {exc}") from exc
        return inputs.to(self._device)

    def build_inputs(self, messages: list[Message]) -> Any:
        """Chat messages -> the processor's tensors (on the model's device), with real video timestamps."""
        r = self._render(messages)
        return self._process(r["text"], r["visual_parts"])

    def _split_prefix(self, rendered: dict[str, Any]) -> tuple[str, str, str] | None:
        """(cache key, prefix text, suffix text) when the request's one visual input asks to be kept."""
        parts = rendered["visual_parts"]
        if self.settings.prefix_cache_gb <= 0 or len(parts) != 1 or not parts[0].cache_key:
            return None
        text: str = rendered["text"]
        pad = "<|video_pad|>" if isinstance(parts[0], VideoPart) else "<|image_pad|>"
        at = text.find(pad)
        end_tag = "<|vision_end|>"
        close = text.find(end_tag, at)
        if at < 0 or close < 0:
            return None
        cut = close + len(end_tag)
        prefix, suffix = text[:cut], text[cut:]
        material = f"{self.settings.model}|{dtype_name(self._dtype)}|{parts[0].cache_key}|{prefix}"
        return hashlib.sha256(material.encode("utf-8")).hexdigest(), prefix, suffix

    def count_visual_tokens(self, input_ids: Any) -> int:
        cfg = self.model.config
        ids = input_ids[0]
        return int(((ids == cfg.image_token_id) | (ids == cfg.video_token_id)).sum().item())

    def decode(self, token_ids: Any) -> str:
        return self.processor.tokenizer.decode(token_ids, skip_special_tokens=True)

    def _generation_kwargs(self, params: GenerationParams, prompt_length: int) -> dict[str, Any]:
        from transformers import GenerationConfig, LogitsProcessorList

        gc = copy.deepcopy(self.model.generation_config) if self.model.generation_config else GenerationConfig()
        gc.max_new_tokens = params.max_new_tokens
        gc.repetition_penalty = params.repetition_penalty
        if params.greedy:
            gc.do_sample = False
            gc.temperature = None
            gc.top_p = None
            gc.top_k = None
        else:
            gc.do_sample = True
            gc.temperature = params.temperature
            gc.top_p = params.top_p
            gc.top_k = params.top_k if params.top_k > 0 else None
        kwargs: dict[str, Any] = {"generation_config": gc}
        if params.presence_penalty:
            kwargs["logits_processor"] = LogitsProcessorList([PresencePenalty(params.presence_penalty, prompt_length)])
        return kwargs

    # -- generation ---------------------------------------------------------------------
    def _cache_kwarg(self) -> str:
        """`cache` on transformers >= 5.24, `past_key_values` before."""
        import inspect

        return "cache" if "cache" in inspect.signature(self._model.forward).parameters else "past_key_values"

    def _prefill_prefix(self, key: str, prefix_inputs: Any) -> "_Prefix":
        """Run the model over the prefix (visual input included) once and keep its KV cache. Holds the lock."""
        import torch

        name = self._cache_kwarg()
        with torch.inference_mode():
            out = self._model(**prefix_inputs, use_cache=True, logits_to_keep=1)
        kv = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        rope = self._model.model.rope_deltas
        grids = {k: prefix_inputs[k] for k in ("image_grid_thw", "video_grid_thw") if k in prefix_inputs}
        entry = _Prefix(
            key=key,
            input_ids=prefix_inputs["input_ids"],
            mm_token_type_ids=prefix_inputs.get("mm_token_type_ids"),
            grids=grids,
            kv=kv,
            rope_deltas=None if rope is None else rope.clone(),
            nbytes=_cache_nbytes(kv),
            cache_kwarg=name,
        )
        self.prefixes.put(entry)
        return entry

    def stream(self, messages: list[Message], params: GenerationParams | None = None, kind: str = "chat") -> TextStream:
        """Start answering; a visual input with a `cache_key` keeps its KV cache so follow-ups skip re-encoding."""
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        params = params or GenerationParams(max_new_tokens=self.settings.max_new_tokens)
        t0 = time.perf_counter()
        self.load()
        record = RequestRecord(started_at=time.time(), kind=kind, model=self.settings.model, status="running")
        prefix_plan: dict[str, Any] | None = None
        try:
            rendered = self._render(messages)
            split = self._split_prefix(rendered)
            if split is None:
                inputs = self._process(rendered["text"], rendered["visual_parts"])
                prompt_ids = inputs["input_ids"]
            else:
                key, prefix_text, suffix_text = split
                tok = self.processor.tokenizer
                suffix_ids = tok(suffix_text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self._device)
                cached = self.prefixes.get(key)
                prefix_inputs = None
                if cached is None:
                    prefix_inputs = self._process(prefix_text, rendered["visual_parts"])
                    prefix_ids = prefix_inputs["input_ids"]
                else:
                    prefix_ids = cached.input_ids
                prompt_ids = torch.cat([prefix_ids, suffix_ids], dim=1)
                prefix_plan = {"key": key, "cached": cached, "prefix_inputs": prefix_inputs, "suffix_ids": suffix_ids}
                inputs = None
        except EngineError as exc:
            record.status, record.error = "error", str(exc)
            self.ledger.add(record)
            raise
        t1 = time.perf_counter()
        prompt_length = int(prompt_ids.shape[1])
        visual = self.count_visual_tokens(prompt_ids)

        cancel = threading.Event()
        first_token: list[float] = []

        class _Streamer(TextIteratorStreamer):
            def put(self, value: Any) -> None:  # noqa: D401 - transformers hook
                if not (self.skip_prompt and self.next_tokens_are_prompt) and not first_token:
                    first_token.append(time.perf_counter())
                super().put(value)

        streamer = _Streamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        gen_kwargs = self._generation_kwargs(params, prompt_length)
        gen_kwargs["streamer"] = streamer
        gen_kwargs["stopping_criteria"] = StoppingCriteriaList([_CancelCriteria(cancel)])

        times: dict[str, float] = {"t0": t0, "t1": t1}
        outcome: dict[str, Any] = {"reused": 0}
        done = threading.Event()
        batchable = (self.settings.max_batch_size > 1 and prefix_plan is None and params.seed is None
                     and self.fast_decode_enabled)
        if batchable:
            job = _Job(inputs=dict(inputs), params=params, streamer=streamer, cancel=cancel, outcome=outcome,
                       done=done, times=times, prompt_length=prompt_length)
            with self._queue_lock:
                self._queue.append(job)
            worker = threading.Thread(target=self._dispatch, name="vlscope-batch", daemon=True)
            worker.start()
        else:
            worker = self._start_single(inputs, prefix_plan, params, streamer, cancel, gen_kwargs, outcome, done,
                                        times, visual, prompt_length)

        def finish() -> GenerationResult:
            done.wait()
            worker.join()  # fully finished: no thread left running in native code at interpreter exit
            t_end = outcome["t_end"]
            t2 = times.get("t2", t_end)
            error = outcome.get("error")
            metrics = Metrics(
                preprocess_ms=(t1 - t0) * 1000,
                queue_ms=(t2 - t1) * 1000,
                visual_tokens=visual,
                reused_prefix_tokens=outcome["reused"],
                decode_path=("static+graph" if outcome["fast"].used_graph else "static") if outcome.get("fast")
                else "plain",
                total_ms=(t_end - t0) * 1000,
                peak_gpu_memory_bytes=outcome.get("peak"),
                batch_size=outcome.get("batch", 1),
            )
            if error is not None:
                record.status, record.error = "error", str(error)
                self._fill_record(record, metrics, prompt_length, 0)
                self.ledger.add(record)
                raise error
            new_ids = outcome["output"][0, prompt_length:]
            eos = self._eos_ids()
            ids = [int(t) for t in new_ids.tolist()]
            stopped_on_eos = bool(ids) and ids[-1] in eos
            while ids and (ids[-1] in eos):
                ids.pop()
            completion = len(ids) + (1 if stopped_on_eos else 0)
            if first_token:
                metrics.prefill_ms = (first_token[0] - t2) * 1000
                metrics.ttft_ms = (first_token[0] - t0) * 1000
                metrics.decode_ms = (t_end - first_token[0]) * 1000
                if completion > 1 and metrics.decode_ms > 0:
                    metrics.decode_tokens_per_s = (completion - 1) / (metrics.decode_ms / 1000)
            if cancel.is_set() and not stopped_on_eos and completion < params.max_new_tokens:
                reason = "cancelled"
            elif stopped_on_eos:
                reason = "stop"
            else:
                reason = "length" if completion >= params.max_new_tokens else "stop"
            result = GenerationResult(
                text=self.decode(ids),
                prompt_tokens=prompt_length,
                completion_tokens=completion,
                finish_reason=reason,
                metrics=metrics,
                model=self.settings.model,
            )
            record.status = reason
            self._fill_record(record, metrics, prompt_length, completion)
            self.ledger.add(record)
            return result

        return TextStream(iter(streamer), cancel.set, finish)

    def _start_single(self, inputs: Any, prefix_plan: dict[str, Any] | None, params: GenerationParams, streamer: Any,
                      cancel: threading.Event, gen_kwargs: dict[str, Any], outcome: dict[str, Any],
                      done: threading.Event, times: dict[str, float], visual: int, prompt_length: int) -> threading.Thread:
        """Run one request alone (prefix reuse, seeded sampling, or plain generate) in a worker thread."""
        import torch

        self._gen_lock.acquire()
        times["t2"] = time.perf_counter()
        cuda = self._device.startswith("cuda")

        fast_prefix: list[Any] = []

        def model_inputs() -> dict[str, Any]:
            if prefix_plan is None:
                return dict(inputs)
            entry = prefix_plan["cached"]
            if entry is None:
                entry = self._prefill_prefix(prefix_plan["key"], prefix_plan["prefix_inputs"])
            else:
                outcome["reused"] = int(entry.input_ids.shape[1])
            suffix = prefix_plan["suffix_ids"]
            full = torch.cat([entry.input_ids, suffix], dim=1)
            kw: dict[str, Any] = {"input_ids": full, "attention_mask": torch.ones_like(full)}
            if entry.mm_token_type_ids is not None:
                kw["mm_token_type_ids"] = torch.cat([entry.mm_token_type_ids, torch.zeros_like(suffix)], dim=1)
            kw.update(entry.grids)
            rope = entry.rope_deltas
            fast_prefix.append((entry.kv, int(entry.input_ids.shape[1]),
                                rope if rope is not None else torch.zeros(1, 1, dtype=torch.long, device=full.device)))
            if self.fast_decode_enabled:
                return kw  # the fast path copies the kept cache into its static cache itself
            kw[entry.cache_kwarg] = copy.deepcopy(entry.kv)
            # generate reads the model's shared rope_deltas: restore the ones of this prefix
            self._model.model.rope_deltas = None if entry.rope_deltas is None else entry.rope_deltas.clone()
            return kw

        def work() -> None:
            try:
                if params.seed is not None:
                    from transformers import set_seed

                    set_seed(params.seed)
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                kw = model_inputs()
                if self.fast_decode_enabled:
                    outcome["output"] = self._fast_generate(kw, params, streamer, cancel,
                                                            fast_prefix[0] if fast_prefix else None)
                    outcome["fast"] = self._fast.last_stats
                else:
                    kw.update(gen_kwargs)
                    with torch.inference_mode():
                        outcome["output"] = self._model.generate(**kw)
                if cuda:
                    outcome["peak"] = int(torch.cuda.max_memory_allocated())
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                if _is_oom(exc):
                    outcome["error"] = OutOfMemory(f"{visual} visual tokens, {prompt_length} prompt tokens")
                    self.prefixes.clear()
                    if cuda:
                        torch.cuda.empty_cache()
                else:
                    log.exception("generation failed")
                    outcome["error"] = EngineError(f"Generation failed: {type(exc).__name__}: {exc}")
                streamer.end()
            finally:
                outcome["t_end"] = time.perf_counter()
                self._gen_lock.release()
                done.set()

        worker = threading.Thread(target=work, name="vlscope-generate", daemon=True)
        worker.start()
        return worker

    def _dispatch(self) -> None:
        """Serve queued requests: whoever gets the model takes up to `max_batch_size` compatible ones."""
        import torch

        from core.vlm.fastdecode import make_picker

        with self._gen_lock:
            with self._queue_lock:
                waiting = bool(self._queue)
            if not waiting:
                return  # an earlier dispatcher already served this request
            if self.settings.batch_window_ms > 0:
                time.sleep(self.settings.batch_window_ms / 1000)  # let requests arriving together join
            with self._queue_lock:
                if not self._queue:
                    return  # an earlier dispatcher already served this request
                head = self._queue[0]
                group = [j for j in self._queue if j.batch_signature() == head.batch_signature()]
                group = group[: self.settings.max_batch_size]
                for j in group:
                    self._queue.remove(j)
            t2 = time.perf_counter()
            for j in group:
                j.times["t2"] = t2
                j.outcome["batch"] = len(group)
            cuda = self._device.startswith("cuda")
            eos = self._eos_ids()
            try:
                self._fast_decoder()
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                for j in group:
                    j.streamer.put(j.inputs["input_ids"].cpu())
                limits = [j.params.max_new_tokens for j in group]
                finished = [False] * len(group)
                counts = [0] * len(group)

                def route(ids: Any) -> None:
                    for b, j in enumerate(group):
                        if finished[b]:
                            continue
                        token = int(ids[b])
                        j.streamer.put(ids[b:b + 1].cpu())
                        counts[b] += 1
                        if token in eos or counts[b] >= limits[b] or j.cancel.is_set():
                            finished[b] = True

                p = group[0].params
                greedy = p.greedy and p.repetition_penalty == 1.0 and not p.presence_penalty
                if len(group) == 1:
                    j = group[0]
                    new = self._fast.generate(j.inputs, j.params.max_new_tokens, make_picker(p, j.inputs["input_ids"]),
                                              eos, on_tokens=route, should_stop=lambda: all(finished), greedy=greedy)
                else:
                    rows = [j.inputs for j in group]
                    width = max(int(r["input_ids"].shape[1]) for r in rows)
                    pad = int(self.processor.tokenizer.pad_token_id or 0)
                    padded = torch.stack([torch.nn.functional.pad(r["input_ids"][0], (width - r["input_ids"].shape[1], 0),
                                                                  value=pad) for r in rows])
                    new = self._fast.generate_batch(rows, max(limits), make_picker(p, padded), eos, on_tokens=route,
                                                    should_stop=lambda: all(finished), greedy=greedy, pad_id=pad)
                peak = int(torch.cuda.max_memory_allocated()) if cuda else None
                for b, j in enumerate(group):
                    row = new[b:b + 1, : counts[b]]
                    j.outcome["output"] = torch.cat([j.inputs["input_ids"], row.to(j.inputs["input_ids"].device)], dim=1)
                    j.outcome["fast"] = self._fast.last_stats
                    j.outcome["peak"] = peak
            except BaseException as exc:  # noqa: BLE001 - handed to every consumer of the batch
                if _is_oom(exc):
                    err: EngineError = OutOfMemory(f"a batch of {len(group)} requests")
                    self.prefixes.clear()
                    if cuda:
                        torch.cuda.empty_cache()
                else:
                    log.exception("batched generation failed")
                    err = EngineError(f"Generation failed: {type(exc).__name__}: {exc}")
                for j in group:
                    j.outcome["error"] = err
            finally:
                t_end = time.perf_counter()
                for j in group:
                    j.streamer.end()
                    j.outcome["t_end"] = t_end
                    j.done.set()

    def _eos_ids(self) -> set[int]:
        eos = self._model.generation_config.eos_token_id
        if eos is None:
            return set()
        return set(eos if isinstance(eos, list) else [eos])

    @staticmethod
    def _fill_record(record: RequestRecord, m: Metrics, prompt: int, completion: int) -> None:
        record.prompt_tokens, record.completion_tokens = prompt, completion
        record.visual_tokens = m.visual_tokens
        record.preprocess_ms, record.queue_ms = m.preprocess_ms, m.queue_ms
        record.prefill_ms, record.ttft_ms, record.total_ms = m.prefill_ms, m.ttft_ms, m.total_ms
        record.decode_tokens_per_s = m.decode_tokens_per_s
        record.batch_size = m.batch_size
        record.peak_gpu_memory_bytes = m.peak_gpu_memory_bytes

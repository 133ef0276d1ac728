"""All device work of the local engine: chat messages rendered into tensors on the device, kept-prefix
prefills, and decoding 1..N requests (plain `generate`, or the fast decoder), with cancellation, the presence
penalty and out-of-memory recovery."""

from __future__ import annotations

import copy
import logging
import threading
import time
from typing import Any

import numpy as np

from core.settings import Settings
from core.vlm.base import EngineError, InvalidRequest, OutOfMemory
from core.vlm.features import FeaturePrefill
from core.vlm.featurestore import FeatureMemory, uses_features
from core.vlm.loading import Loaded, dtype_name
from core.vlm.prefix import Prefix, PrefixPlan, PrefixStore, cache_nbytes, split_prefix
from core.vlm.scheduler import Request
from core.vlm.types import GenerationParams, ImagePart, Message, TextPart, VideoPart, to_rgb_array

log = logging.getLogger(__name__)


class CancelCriteria:
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


def is_oom(exc: BaseException) -> bool:
    """Whether `exc` is the GPU (or host) running out of memory."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def fast_decode_wanted(mode: str, device: str) -> bool:
    """Whether the `fast_decode` setting puts requests on the static-cache / CUDA-graph path on `device`."""
    return mode == "on" or (mode == "auto" and device.startswith("cuda"))


def make_streamer(tokenizer: Any) -> Any:
    """A transformers TextIteratorStreamer (prompt skipped) that notes when the first new token came
    (`first_token`, perf_counter seconds) and ends only once."""
    from transformers import TextIteratorStreamer

    class TokenStreamer(TextIteratorStreamer):
        first_token: float | None = None
        _ended = False

        def put(self, value: Any) -> None:  # noqa: D401 - transformers hook
            if not (self.skip_prompt and self.next_tokens_are_prompt) and self.first_token is None:
                self.first_token = time.perf_counter()
            super().put(value)

        def end(self) -> None:  # noqa: D401 - transformers hook
            if not self._ended:
                self._ended = True
                super().end()

    return TokenStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


class Runner:
    """The loaded model and processor, and everything that runs on their device."""

    def __init__(self, settings: Settings, loaded: Loaded, prefixes: PrefixStore) -> None:
        self.settings = settings
        self.model = loaded.model
        self.processor = loaded.processor
        self.device = loaded.device
        self.dtype = loaded.dtype
        self.prefixes = prefixes
        self.fast: Any = None
        """The one FastDecoder (its static caches and graphs are reused across requests), once set up."""
        self.features: FeatureMemory | None = None
        """The visual memory (stored features of kept videos), when the engine has a feature store."""
        from core.vlm.arch import architecture_of, decode_path_reason, think_end_id

        self.architecture = architecture_of(self.model)
        self.fast_unsupported = decode_path_reason(self.model)
        """Why the fast decoder cannot run this architecture (None when it can): requests then use `generate`."""
        self.think_end = think_end_id(self.processor.tokenizer)  # a thinking model's `</think>`, else None

    @property
    def fast_enabled(self) -> bool:
        return self.fast_unsupported is None and fast_decode_wanted(self.settings.fast_decode, self.device)

    def fast_decoder(self) -> Any:
        """The FastDecoder, set up at the first call."""
        from core.vlm.fastdecode import FastDecoder

        if self.fast is None:
            self.fast = FastDecoder(self.model, use_cuda_graph=self.device.startswith("cuda"),
                                    compile_step=self.settings.compile_decode, kernels=self.settings.decode_kernels)
        return self.fast

    # -- inputs ---------------------------------------------------------------------------
    def render(self, messages: list[Message]) -> tuple[str, list[Any]]:
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
                elif isinstance(part, (ImagePart, VideoPart)):
                    content.append({"type": "image" if isinstance(part, ImagePart) else "video"})
                    visual_parts.append(part)
                else:
                    raise InvalidRequest(f"Unknown message part {type(part).__name__}")
            hf_messages.append({"role": message.role, "content": content})
        text = self.processor.apply_chat_template(hf_messages, tokenize=False, add_generation_prompt=True)
        return text, visual_parts

    def process(self, text: str, visual_parts: list[Any]) -> Any:
        """Prompt text + visual parts -> the processor's tensors on the model's device."""
        from transformers.video_utils import VideoMetadata

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
            metadata.append(VideoMetadata(
                total_num_frames=int(total), fps=float(part.source_fps), width=int(stack.shape[2]),
                height=int(stack.shape[1]), duration=float(total) / float(part.source_fps),
                frames_indices=[int(i) for i in part.frame_indices]))
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
            if hasattr(type(self.processor.video_processor), "cap_pixels_per_frame"):
                # the reference (qwen-vl-utils) per-frame pixel cap; transformers >= 5.21 knows it
                kwargs["cap_pixels_per_frame"] = True
            if video_size:
                kwargs["size"] = video_size
        try:
            inputs = self.processor(**kwargs)
        except ValueError as exc:
            raise InvalidRequest(f"The processor refused the input: {exc}") from exc
        return inputs.to(self.device)

    def build_inputs(self, messages: list[Message]) -> Any:
        """Chat messages -> the processor's tensors (on the model's device), with real video timestamps."""
        return self.process(*self.render(messages))

    def count_visual_tokens(self, input_ids: Any) -> int:
        cfg = self.model.config
        ids = input_ids[0]
        return int(((ids == cfg.image_token_id) | (ids == cfg.video_token_id)).sum().item())

    def decode(self, token_ids: Any) -> str:
        return self.processor.tokenizer.decode(token_ids, skip_special_tokens=True)

    def eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            return set()
        return set(eos if isinstance(eos, list) else [eos])

    def prepare(self, messages: list[Message], params: GenerationParams, created: float) -> Request:
        """Render and tokenise a request; a visual input with a `cache_key` is planned as a kept prefix + the rest."""
        import torch

        text, parts = self.render(messages)
        split, kept = None, uses_features(parts, self.features)
        if self.settings.prefix_cache_gb > 0 or kept:
            split = split_prefix(text, parts, f"{self.settings.model}|{dtype_name(self.dtype)}")
        inputs, plan = None, None
        if split is None:
            inputs = dict(self.process(text, parts))
            prompt_ids = inputs["input_ids"]
        else:
            key, prefix_text, suffix_text = split
            tok = self.processor.tokenizer
            suffix_ids = tok(suffix_text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self.device)
            cached = self.prefixes.get(key)
            prefix_inputs = None if cached is not None else (
                self.features.prefix_inputs(prefix_text, parts[0], self.device) if kept
                else self.process(prefix_text, parts))
            prefix_ids = cached.input_ids if cached is not None else prefix_inputs["input_ids"]
            prompt_ids = torch.cat([prefix_ids, suffix_ids], dim=1)
            plan = PrefixPlan(key=key, cached=cached, prefix_inputs=prefix_inputs, suffix_ids=suffix_ids)
        rendered = time.perf_counter()
        return Request(params=params, streamer=make_streamer(self.processor.tokenizer),
                       prompt_length=int(prompt_ids.shape[1]), visual_tokens=self.count_visual_tokens(prompt_ids),
                       inputs=inputs, prefix=plan, can_batch=plan is None and params.seed is None and self.fast_enabled,
                       created=created, rendered=rendered)

    # -- running --------------------------------------------------------------------------
    def run(self, group: list[Request]) -> None:
        """Decode 1..N requests of one batch signature (N > 1: fast path, no kept prefix, no seed). Never raises:
        each request gets its `new_ids` or its `error`; their streamers are ended."""
        import torch

        cuda = self.device.startswith("cuda")
        try:
            if group[0].params.seed is not None:
                from transformers import set_seed

                set_seed(group[0].params.seed)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            if len(group) > 1 or self.fast_enabled:
                self._decode_fast(group)
            else:
                self._decode_plain(group[0])
            peak = int(torch.cuda.max_memory_allocated()) if cuda else None
            for r in group:
                r.peak_bytes = peak
        except BaseException as exc:  # noqa: BLE001 - handed to every consumer of the group
            if is_oom(exc):
                first = group[0]
                what = (f"{first.visual_tokens} visual tokens, {first.prompt_length} prompt tokens" if len(group) == 1
                        else f"a batch of {len(group)} requests")
                error: EngineError = OutOfMemory(what)
                self.prefixes.clear()
                if cuda:
                    torch.cuda.empty_cache()
            else:
                log.exception("generation failed" if len(group) == 1 else "batched generation failed")
                error = EngineError(f"Generation failed: {type(exc).__name__}: {exc}")
            for r in group:
                r.error = error
        finally:
            for r in group:
                r.streamer.end()

    def _model_inputs(self, request: Request, fast: bool) -> tuple[dict[str, Any], tuple[Any, int, Any] | None]:
        """The model's inputs for `request` and, on the fast path, its kept prefix (cache, length, rope deltas)."""
        import torch

        plan = request.prefix
        if plan is None:
            return dict(request.inputs or {}), None
        entry = plan.cached
        if entry is None:
            entry = self._prefill_prefix(plan.key, plan.prefix_inputs)
        else:
            request.reused_tokens = int(entry.input_ids.shape[1])
        suffix = plan.suffix_ids
        full = torch.cat([entry.input_ids, suffix], dim=1)
        kw: dict[str, Any] = {"input_ids": full, "attention_mask": torch.ones_like(full)}
        if entry.mm_token_type_ids is not None:
            kw["mm_token_type_ids"] = torch.cat([entry.mm_token_type_ids, torch.zeros_like(suffix)], dim=1)
        kw.update(entry.grids)
        rope = entry.rope_deltas
        if fast:  # the fast path copies the kept cache into its static cache itself
            rope = rope if rope is not None else torch.zeros(1, 1, dtype=torch.long, device=full.device)
            return kw, (entry.kv, int(entry.input_ids.shape[1]), rope)
        kw[entry.cache_kwarg] = copy.deepcopy(entry.kv)
        # generate reads the model's shared rope_deltas: restore the ones of this prefix
        self.model.model.rope_deltas = None if rope is None else rope.clone()
        return kw, None

    def _prefill_prefix(self, key: str, prefix_inputs: Any) -> Prefix:
        """Run the model over the prefix (visual input included) once and keep its KV cache."""
        import inspect

        import torch

        name = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        if isinstance(prefix_inputs, FeaturePrefill):  # from visual features: the language model only
            kv, rope = self.features.prefill(prefix_inputs)
        else:
            with torch.inference_mode():
                out = self.model(**prefix_inputs, use_cache=True, logits_to_keep=1)
            kv = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            rope = self.model.model.rope_deltas
        entry = Prefix(key=key, input_ids=prefix_inputs["input_ids"],
                       mm_token_type_ids=prefix_inputs.get("mm_token_type_ids"),
                       grids={k: prefix_inputs[k] for k in ("image_grid_thw", "video_grid_thw") if k in prefix_inputs},
                       kv=kv, rope_deltas=None if rope is None else rope.clone(), nbytes=cache_nbytes(kv),
                       cache_kwarg=name)
        if self.settings.prefix_cache_gb > 0:  # a feature-backed video splits even with reuse off
            self.prefixes.put(entry)
        return entry

    def _decode_plain(self, request: Request) -> None:
        """transformers' `generate`, streaming into the request's streamer."""
        import torch
        from transformers import StoppingCriteriaList

        kw, _ = self._model_inputs(request, fast=False)
        kw.update(self._generation_kwargs(request.params, request.prompt_length))
        kw["streamer"] = request.streamer
        kw["stopping_criteria"] = StoppingCriteriaList([CancelCriteria(request.cancel)])
        with torch.inference_mode():
            output = self.model.generate(**kw)
        request.new_ids = output[0, request.prompt_length:]

    def _decode_fast(self, group: list[Request]) -> None:
        """The fast decoder over 1..N requests in the same steps, each streamed and stopped on its own."""
        from core.vlm.rows import make_picker, padded_prompts

        fast = self.fast_decoder()
        rows, prefix = [], None
        for r in group:
            kw, prefix = self._model_inputs(r, fast=True)
            rows.append(kw)
        for r, row in zip(group, rows):
            r.streamer.put(row["input_ids"].cpu())
        eos = self.eos_ids()
        limits = [r.params.max_new_tokens for r in group]
        finished = [False] * len(group)
        counts = [0] * len(group)

        def route(ids: Any) -> None:
            for b, r in enumerate(group):
                if finished[b]:
                    continue
                token = int(ids[b])
                r.streamer.put(ids[b:b + 1].cpu())
                counts[b] += 1
                if token in eos or counts[b] >= limits[b] or r.cancel.is_set():
                    finished[b] = True

        def should_stop() -> bool:
            return all(done or r.cancel.is_set() for done, r in zip(finished, group))

        p = group[0].params
        greedy = p.greedy and p.repetition_penalty == 1.0 and not p.presence_penalty
        pad = int(self.processor.tokenizer.pad_token_id or 0)
        new = fast.generate(rows, max(limits), make_picker(p, padded_prompts(rows, pad)), eos, on_tokens=route,
                            should_stop=should_stop, prefix=prefix, greedy=greedy, pad_id=pad,
                            profile=self.settings.profile_fast_decode)
        for b, r in enumerate(group):
            r.new_ids = new[b, : counts[b]]
            r.fast_stats = fast.last_stats

    def _generation_kwargs(self, params: GenerationParams, prompt_length: int) -> dict[str, Any]:
        """transformers' generation config (and presence penalty) for `params`."""
        from transformers import GenerationConfig, LogitsProcessorList

        gc = copy.deepcopy(self.model.generation_config) if self.model.generation_config else GenerationConfig()
        gc.max_new_tokens = params.max_new_tokens
        gc.repetition_penalty = params.repetition_penalty
        gc.do_sample = not params.greedy
        gc.temperature = None if params.greedy else params.temperature
        gc.top_p = None if params.greedy else params.top_p
        gc.top_k = params.top_k if not params.greedy and params.top_k > 0 else None
        kwargs: dict[str, Any] = {"generation_config": gc}
        if params.presence_penalty:
            kwargs["logits_processor"] = LogitsProcessorList([PresencePenalty(params.presence_penalty, prompt_length)])
        return kwargs

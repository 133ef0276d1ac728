"""Fast decoding: a static KV cache and a decode step replayed as a CUDA graph.

Plain `generate` launches hundreds of small kernels per token from Python, so a 4B model on an H200
decodes at a few percent of the memory-bandwidth limit. Here the prompt is prefilled once into a
`StaticCache`; each later token runs one captured CUDA graph (on CUDA) of the text model's forward
for a single token, with fixed input buffers. Off CUDA, or when capture fails, the same loop runs
eagerly, so results are identical either way and the plain path stays as the fallback.
"""

from __future__ import annotations

import inspect
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

from core.vlm.decodeloop import DecodeLoops
from core.vlm.rows import MERGED_PREFILL_TOKENS, VISUAL_KEYS, make_picker, merge_rows
from core.vlm.suffix_attention import suffix_attention

__all__ = ["MERGED_PREFILL_TOKENS", "FastDecodeStats", "FastDecoder", "make_picker", "merge_rows"]

log = logging.getLogger(__name__)


@dataclass
class FastDecodeStats:
    """What the fast path did for one request."""

    used_graph: bool
    prompt_tokens: int
    new_tokens: int
    fallback_reason: str | None = None
    step: str = "lean"
    """Which decode step ran: "lean" (core.vlm.leanstep) or "transformers" (the model's own forward)."""
    phases_ms: dict[str, float] | None = None
    """With `profile=True` (setting `profile_fast_decode`), on CUDA: the synchronised time of each phase (cache,
    load_prefix, prefill, decode)."""


def _cache_kwarg(model: Any) -> str:
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class FastDecoder(DecodeLoops):
    """Greedy or sampled decoding of one or more prompts with a static cache.

    `pick(logits) -> token ids` chooses the next token (argmax for greedy); it runs outside the graph.
    `kernels` is the `decode_kernels` setting of the lean step ("auto", "torch" or "triton").
    """

    def __init__(self, model: Any, use_cuda_graph: bool = True, compile_step: bool = False,
                 step: str = "lean", kernels: str = "auto") -> None:
        self.model = model
        self._lean: Any = None
        self.step_name = "transformers"
        self.step_fallback: str | None = None
        if step == "lean":
            from core.vlm.leanstep import LeanDecodeStep, unsupported_reason

            self.step_fallback = unsupported_reason(model)
            if self.step_fallback is None:
                self._lean = LeanDecodeStep(model, kernels=kernels)
                self.step_name = "lean"
            else:
                log.info("fast decoding uses transformers' forward per step: %s", self.step_fallback)
        self.compile_step, self.use_cuda_graph = compile_step, use_cuda_graph
        self._graph: Any = None  # and the greedy loop's, below
        self._greedy_graph: Any = None
        self._mask: Any = None
        self._compiled: Any = None  # None: not decided yet; False: eager; else the compiled step
        self.compile_fallback: str | None = None
        self._graph_key: tuple[int, int] | None = None
        self._cache: Any = None
        self._lent_to: Any = None
        self._slots: weakref.WeakKeyDictionary[Any, tuple[Any, ...]] = weakref.WeakKeyDictionary()
        self.last_stats: FastDecodeStats | None = None

    def describe(self) -> str:
        """How this decoder runs, for people: the step, its kernels, graphs and compilation, with fallback reasons."""
        if self._lean is not None:
            lean = self._lean
            text = "lean step, " + ("Triton kernels" if lean.kernels == "triton" else
                                    f"PyTorch kernels ({lean.kernels_fallback})") + (f", {lean.experts}" * bool(lean.experts))
        else:
            text = "transformers' step" + (f" ({self.step_fallback})" if self.step_fallback else "")
        text += ", CUDA graph" if self.use_cuda_graph else ", no CUDA graph"
        if self.compile_step:
            text += ", torch.compile" + (f" failed, uncompiled: {self.compile_fallback}" if self.compile_fallback else "")
        return text

    def _new_cache(self, max_len: int, batch: int) -> Any:
        from transformers import StaticCache

        return StaticCache(config=self.model.config, max_cache_len=max_len)

    def _step(self, tokens: Any, cache_position: Any, rope_deltas: Any) -> Any:
        """The decode step, compiled by torch.compile with the `compile_decode` setting (fuses the small kernels)."""
        if self._compiled is None:  # decided once: a compiled step, or False for the eager one
            self._compiled = False
            if self.compile_step and tokens.device.type == "cuda":
                import torch

                # Inductor fuses the small element-wise kernels; the CUDA graph stays ours. Shapes start static and
                # turn dynamic at the second cache length, so a new prompt-length bucket compiles at most once more.
                self._compiled = torch.compile(self._step_eager, mode="default")
        if self._compiled:
            try:
                return self._compiled(tokens, cache_position, rope_deltas)
            except Exception as exc:  # noqa: BLE001 - compiling is an optimisation: decode without it
                self.compile_fallback = f"torch.compile failed ({type(exc).__name__}: {str(exc)[:300]})"
                self._fallback = self.compile_fallback
                log.warning("fast decoding runs the step uncompiled: %s", self.compile_fallback)
                self._compiled = False
        return self._step_eager(tokens, cache_position, rope_deltas)

    def _step_eager(self, tokens: Any, cache_position: Any, rope_deltas: Any) -> Any:
        """Logits after feeding `tokens` (B, 1) at cache index `cache_position` (1,): the lean step where it applies."""
        if self._lean is not None:
            return self._lean(tokens, cache_position, rope_deltas, self._cache.layers, self._mask)
        return self._step_transformers(tokens, cache_position, rope_deltas)

    def _step_transformers(self, tokens: Any, cache_position: Any, rope_deltas: Any) -> Any:
        """The model's own forward for one token per row.

        Position ids are 4 rows: the text position (which the causal mask uses) and the three M-RoPE rows,
        text position + the prompt's rope deltas. The static cache writes at its own running counter.
        """
        import torch

        batch = tokens.shape[0]
        text = cache_position.view(1, 1, 1).expand(1, batch, 1)
        mrope = (cache_position.view(1, 1, 1) + rope_deltas.view(1, -1, 1)).expand(3, batch, 1)
        kwargs = {
            "input_ids": tokens,
            "position_ids": torch.cat([text, mrope], dim=0),
            "use_cache": True,
            "logits_to_keep": 1,
            self._kw: self._cache,
        }
        if self._mask is not None:
            kwargs["attention_mask"] = self._mask  # (B, max_cache_len): left padding of batched rows
        out = self.model(**kwargs)
        return out.logits[:, -1, :]

    def _forward_tokens(self, tokens: Any, positions: Any, rope_deltas: Any) -> Any:
        """Logits of the last of several text tokens fed at cache indices `positions`."""
        import torch

        batch, n = tokens.shape
        text = positions.view(1, 1, n).expand(1, batch, n)
        mrope = (positions.view(1, 1, n) + rope_deltas.view(1, -1, 1)).expand(3, batch, n)
        out = self.model(input_ids=tokens, position_ids=torch.cat([text, mrope], dim=0), use_cache=True,
                         logits_to_keep=1, **{self._kw: self._cache})
        return out.logits[:, -1, :]

    def _load_prefix(self, kv: Any, length: int) -> None:
        """Put a kept prefix cache in the static cache and move its counters to `length`. Unless it is there already,
        each layer is copied in and the kept cache then points at the static cache's memory (its own is freed, one
        layer at a time): one copy of the prefix on the device, not two. That static cache is then lent to the
        kept prefix: later prompts get another (`_lent`), its follow-ups this one (`_slots`)."""
        if self._lent() is not kv:
            for static_layer, kept_layer in zip(self._cache.layers, kv.layers):
                if not getattr(static_layer, "is_initialized", True):
                    static_layer.lazy_initialization(kept_layer.keys[:1, :, :1].contiguous(),
                                                     kept_layer.values[:1, :, :1].contiguous())
                static_layer.keys[:, :, :length].copy_(kept_layer.keys[:, :, :length])
                static_layer.values[:, :, :length].copy_(kept_layer.values[:, :, :length])
                kept_layer.keys = static_layer.keys[:, :, :length]
                kept_layer.values = static_layer.values[:, :, :length]
            self._lent_to = weakref.ref(kv)
        for counter in self._counters():
            counter.fill_(length)

    def _lent(self) -> Any:
        """The kept prefix cache whose memory the current static cache holds, or None."""
        return self._lent_to() if self._lent_to is not None else None

    def _state(self) -> tuple[Any, ...]:
        return (self._cache, self._graph, self._greedy_graph, self._graph_key, self._buffers, self._mask_buffer,
                self._lent_to, getattr(self, "_graph_logits", None))

    def _enter(self, slot: tuple[Any, ...]) -> None:
        (self._cache, self._graph, self._greedy_graph, self._graph_key, self._buffers, self._mask_buffer,
         self._lent_to, self._graph_logits) = slot

    def _counters(self) -> list[Any]:
        return [layer.cumulative_length for layer in getattr(self._cache, "layers", [])
                if hasattr(layer, "cumulative_length") and hasattr(layer.cumulative_length, "copy_")]

    def generate(
        self,
        inputs: dict[str, Any] | list[dict[str, Any]],
        max_new_tokens: int,
        pick: Callable[[Any, Any], Any],
        eos_ids: set[int],
        on_tokens: Callable[[Any], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        prefix: tuple[Any, int, Any] | None = None,
        greedy: bool = False,
        pad_id: int = 0,
        profile: bool = False,
    ) -> Any:
        """Decode up to `max_new_tokens` after the prompts; returns the generated ids (B, n).

        `inputs` is one processor output (B rows of one length, prefilled straight into the static cache), or a
        list of single-prompt outputs of any lengths: those are left-padded with `pad_id` and prefilled in one
        forward (`merge_rows`; rows that cannot be merged are prefilled one by one and their caches placed
        right-aligned) into one batched static cache, padding masked. A list of one is decoded as one output.
        Then all rows decode in the same steps; rows that end early get EOS after their end.
        `pick(logits, generated_so_far)` returns the next ids (B,); `on_tokens(ids)` sees each step's ids.
        `prefix` = (kept DynamicCache, its length, its rope deltas), one output only: only the rest of the
        prompt is prefilled. `greedy=True` (argmax, no penalties; `pick` unused) runs steps back to back without
        host round trips. `profile=True` (on CUDA) records each phase's synchronised time in `last_stats`.
        """
        import torch

        rows = [inputs] if isinstance(inputs, dict) else list(inputs)
        if prefix is not None and len(rows) != 1:
            raise ValueError("a kept prefix is for one prompt at a time")
        with torch.inference_mode():
            return self._decode(rows, max_new_tokens, pick, eos_ids, on_tokens, should_stop, prefix, greedy, pad_id,
                                profile)

    def generate_batch(self, rows: list[dict[str, Any]], max_new_tokens: int, pick: Callable[[Any, Any], Any],
                       eos_ids: set[int], on_tokens: Callable[[Any], None] | None = None,
                       should_stop: Callable[[], bool] | None = None, greedy: bool = False, pad_id: int = 0) -> Any:
        """`generate` of several single-prompt outputs (the list form)."""
        return self.generate(list(rows), max_new_tokens, pick, eos_ids, on_tokens, should_stop, greedy=greedy,
                             pad_id=pad_id)

    def _decode(self, rows: list[dict[str, Any]], max_new_tokens: int, pick: Callable[[Any, Any], Any],
                eos_ids: set[int], on_tokens: Callable[[Any], None] | None, should_stop: Callable[[], bool] | None,
                prefix: tuple[Any, int, Any] | None, greedy: bool, pad_id: int, profile: bool) -> Any:
        """The one decode loop for 1..N rows: bucket and cache, prefill, then greedy or sampled steps."""
        import torch

        self._used_graph = False
        self._fallback = None
        self._kw = _cache_kwarg(self.model)
        device = rows[0]["input_ids"].device
        profile = profile and device.type == "cuda"
        phases: dict[str, float] = {}
        mark = [time.perf_counter()]

        def lap(name: str) -> None:
            if profile:
                torch.cuda.synchronize()
                now = time.perf_counter()
                phases[name] = (now - mark[0]) * 1000
                mark[0] = now

        masked = len(rows) > 1  # prompts of several lengths: left padding, masked in the static cache
        width = max(int(row["input_ids"].shape[1]) for row in rows)
        batch = len(rows) if masked else int(rows[0]["input_ids"].shape[0])
        # one cache per shape bucket: reuse it (and its graph) when the next request fits. A kept prefix lives in
        # the static cache it was last decoded in (`_load_prefix`): its follow-ups reuse that cache as it is
        slack = 2048 if prefix is not None else 0  # room for follow-ups, which then fit the same cache
        bucket = (batch, ((width + max_new_tokens + 1 + slack + 255) // 256) * 256, masked)
        slot = self._slots.get(prefix[0]) if prefix is not None else None
        if slot is not None and slot[3][0] == batch and not masked and slot[3][1] >= bucket[1] - slack:
            self._enter(slot)
        elif self._cache is None or self._graph_key != bucket or self._lent() is not None:
            self._new_bucket(bucket, device)
        else:
            self._cache.reset()
        self._mask = self._mask_buffer  # None when unmasked
        lap("cache")
        if masked:
            logits, rope_deltas = self._prefill_rows(rows, width, pad_id)
        elif prefix is None:
            logits, rope_deltas = self._prefill(rows[0])
        else:
            logits, rope_deltas = self._prefill_after(rows[0], prefix, lap)
        lap("prefill")
        rope_deltas = rope_deltas.to(device)
        use_graph = self.use_cuda_graph and device.type == "cuda"
        eos = torch.tensor(sorted(eos_ids), device=device) if eos_ids else None
        if greedy:
            generated = self._greedy_loop(logits, rope_deltas, width, max_new_tokens, eos, on_tokens, should_stop,
                                          use_graph)
        else:
            generated = self._sampling_loop(logits, rope_deltas, width, max_new_tokens, pick, eos, on_tokens,
                                            should_stop, use_graph)
        lap("decode")
        lent = self._lent()
        if lent is not None:  # the kept prefix's static cache, with its graphs, for its follow-ups
            self._slots[lent] = self._state()
        self.last_stats = FastDecodeStats(used_graph=self._used_graph, prompt_tokens=width,
                                          new_tokens=int(generated.shape[1]), fallback_reason=self._fallback,
                                          step=self.step_name, phases_ms=phases or None)
        return generated

    def _prefill(self, inputs: dict[str, Any]) -> tuple[Any, Any]:
        """Prefill rows of one length straight into the static cache: (last logits, rope deltas)."""
        import torch

        model = self.model
        prefill = dict(inputs)
        prefill.update({self._kw: self._cache, "use_cache": True, "logits_to_keep": 1})
        model.model.rope_deltas = None  # a text-only prompt must not inherit another request's deltas
        logits = model(**prefill).logits[:, -1, :]
        rope = model.model.rope_deltas
        input_ids = inputs["input_ids"]
        return logits, (rope if rope is not None
                        else torch.zeros(input_ids.shape[0], 1, dtype=torch.long, device=input_ids.device))

    def _prefill_after(self, inputs: dict[str, Any], prefix: tuple[Any, int, Any],
                       lap: Callable[[str], None]) -> tuple[Any, Any]:
        """Load a kept prefix cache, then prefill only the rest of the prompt: (last logits, rope deltas). The rest
        attends through `core.vlm.suffix_attention` (no mask, no plan per question length, the kept keys in splits)."""
        import torch

        kept_kv, kept_len, rope_deltas = prefix
        self._load_prefix(kept_kv, kept_len)
        lap("load_prefix")
        input_ids = inputs["input_ids"]
        positions = torch.arange(kept_len, input_ids.shape[1], device=input_ids.device)
        with suffix_attention(self.model, kept_len, int(input_ids.shape[0])):
            return self._forward_tokens(input_ids[:, kept_len:], positions, rope_deltas), rope_deltas

    def _prefill_rows(self, rows: list[dict[str, Any]], width: int, pad_id: int) -> tuple[Any, Any]:
        """Prefill prompts of any lengths into the batched static cache, right-aligned with the padding masked:
        (last logits, per-row rope deltas counted from each row's first real token)."""
        import torch

        model = self.model
        batch = len(rows)
        device = rows[0]["input_ids"].device
        lengths = [int(row["input_ids"].shape[1]) for row in rows]
        self._mask.zero_()
        merged = merge_rows(rows, pad_id)
        if merged is not None:
            # one left-padded prefill for all rows: its cache is already laid out as the batch decodes it.
            # Positions count from each row's first real token, as alone: transformers does so itself when the
            # batch holds images or videos (M-RoPE from the attention mask); for text only they are given here.
            model.model.rope_deltas = None
            mask = merged["attention_mask"]
            if not any(key in merged for key in VISUAL_KEYS):
                merged["position_ids"] = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
            out = model(**merged, use_cache=True, logits_to_keep=1)
            kv = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            self._fill_static(kv, batch)
            for static_layer, kept_layer in zip(self._cache.layers, kv.layers):
                static_layer.keys[:, :, :width].copy_(kept_layer.keys)
                static_layer.values[:, :, :width].copy_(kept_layer.values)
            self._mask[:, :width] = mask
            self._mask[:, width:] = 1
            rope = model.model.rope_deltas  # per row, as alone (transformers counts from the first real token)
            deltas = [int(d) for d in rope.view(batch).tolist()] if rope is not None else [0] * batch
            stacked = out.logits[:, -1, :]
        else:
            kept, deltas, logits = [], [], []
            for row in rows:  # rows that cannot share one forward: each prefilled on its own
                model.model.rope_deltas = None
                out = model(**row, use_cache=True, logits_to_keep=1)
                kept.append(getattr(out, "cache", None) or getattr(out, "past_key_values", None))
                rope = model.model.rope_deltas
                deltas.append(int(rope.view(-1)[0]) if rope is not None else 0)
                logits.append(out.logits[:, -1, :])
            self._fill_static(kept[0], batch)
            for b, (cache, length) in enumerate(zip(kept, lengths)):
                pad = width - length
                for static_layer, kept_layer in zip(self._cache.layers, cache.layers):
                    static_layer.keys[b:b + 1, :, pad:width].copy_(kept_layer.keys[:, :, :length])
                    static_layer.values[b:b + 1, :, pad:width].copy_(kept_layer.values[:, :, :length])
                self._mask[b, pad:] = 1
            stacked = torch.cat(logits, dim=0)
        # M-RoPE positions continue each row's own count: cache index - left padding + the row's rope delta
        rope_deltas = torch.tensor([[d - (width - n)] for d, n in zip(deltas, lengths)], device=device)
        for counter in self._counters():
            counter.fill_(width)
        return stacked, rope_deltas

    def _new_bucket(self, bucket: tuple[int, int, bool], device: Any) -> None:
        """A fresh static cache, input buffers (and no graphs yet) for `bucket` = (batch, cache length, masked)."""
        import torch

        batch, length, masked = bucket
        self._cache = self._new_cache(length, batch)
        self._lent_to = None
        self._graph = None
        self._greedy_graph = None
        self._graph_key = bucket
        self._buffers = (
            torch.zeros(batch, 1, dtype=torch.long, device=device),
            torch.zeros(1, dtype=torch.long, device=device),
            torch.zeros(batch, 1, dtype=torch.long, device=device),
        )
        self._mask_buffer = torch.zeros(batch, length, dtype=torch.long, device=device) if masked else None

    def _fill_static(self, kept: Any, batch: int) -> None:
        """Allocate the static cache's buffers (shape, dtype, device of a kept cache) for `batch` rows."""
        for static_layer, kept_layer in zip(self._cache.layers, kept.layers):
            if not getattr(static_layer, "is_initialized", True):
                k = kept_layer.keys[:1, :, :1].expand(batch, -1, -1, -1).contiguous()
                v = kept_layer.values[:1, :, :1].expand(batch, -1, -1, -1).contiguous()
                static_layer.lazy_initialization(k, v)

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
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

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
    """With VLSCOPE_PROFILE_FAST=1: synchronised time of each phase (prefill, load_prefix, suffix, decode)."""


def _cache_kwarg(model: Any) -> str:
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class FastDecoder:
    """Greedy or sampled decoding of one or more equal-length prompts with a static cache.

    `pick(logits) -> token ids` chooses the next token (argmax for greedy); it runs outside the graph.
    """

    def __init__(self, model: Any, use_cuda_graph: bool = True, compile_step: bool = False,
                 step: str = "lean") -> None:
        self.model = model
        self._lean: Any = None
        self.step_name = "transformers"
        self.step_fallback: str | None = None
        if step == "lean":
            from core.vlm.leanstep import LeanDecodeStep, unsupported_reason

            self.step_fallback = unsupported_reason(model)
            if self.step_fallback is None:
                self._lean = LeanDecodeStep(model)
                self.step_name = "lean"
            else:
                log.info("fast decoding uses transformers' forward per step: %s", self.step_fallback)
        self.compile_step = compile_step
        self.use_cuda_graph = use_cuda_graph
        self._graph: Any = None
        self._greedy_graph: Any = None
        self._mask: Any = None
        self._compiled: Any = None  # None: not decided yet; False: eager; else the compiled step
        self.compile_fallback: str | None = None
        self._graph_key: tuple[int, int] | None = None
        self._cache: Any = None
        self.last_stats: FastDecodeStats | None = None

    @property
    def _compile_wanted(self) -> bool:
        """The `compile_decode` setting (or VLSCOPE_COMPILE_DECODE=1) asks for a compiled step."""
        return self.compile_step or os.environ.get("VLSCOPE_COMPILE_DECODE") == "1"

    def describe(self) -> str:
        """How this decoder runs, for people: the step, its kernels, graphs and compilation, with fallback reasons."""
        if self._lean is not None:
            lean = self._lean
            text = "lean step, " + ("Triton kernels" if lean.kernels == "triton"
                                    else f"PyTorch kernels ({lean.kernels_fallback})")
        else:
            text = "transformers' step" + (f" ({self.step_fallback})" if self.step_fallback else "")
        text += ", CUDA graph" if self.use_cuda_graph else ", no CUDA graph"
        if self._compile_wanted:
            text += ", torch.compile" + (f" failed, uncompiled: {self.compile_fallback}" if self.compile_fallback else "")
        return text

    def _new_cache(self, max_len: int, batch: int) -> Any:
        from transformers import StaticCache

        return StaticCache(config=self.model.config, max_cache_len=max_len)

    def _step(self, tokens: Any, cache_position: Any, rope_deltas: Any) -> Any:
        """The decode step, compiled by torch.compile with the `compile_decode` setting (fuses the small kernels)."""
        if self._compiled is None:  # decided once: a compiled step, or False for the eager one
            self._compiled = False
            if self._compile_wanted and tokens.device.type == "cuda":
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
        """Copy a kept (dynamic) prefix cache into the static cache and move its counters to `length`."""

        self._fill_static(kv, 1)
        for static_layer, kept_layer in zip(self._cache.layers, kv.layers):
            static_layer.keys[:, :, :length].copy_(kept_layer.keys[:, :, :length])
            static_layer.values[:, :, :length].copy_(kept_layer.values[:, :, :length])
        for counter in self._counters():
            counter.fill_(length)

    def _counters(self) -> list[Any]:
        return [layer.cumulative_length for layer in getattr(self._cache, "layers", [])
                if hasattr(layer, "cumulative_length") and hasattr(layer.cumulative_length, "copy_")]

    def generate(
        self,
        inputs: dict[str, Any],
        max_new_tokens: int,
        pick: Callable[[Any, Any], Any],
        eos_ids: set[int],
        on_tokens: Callable[[Any], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        prefix: tuple[Any, int, Any] | None = None,
        greedy: bool = False,
    ) -> Any:
        """Decode up to `max_new_tokens` after the prompt in `inputs`; returns the generated ids (B, n).

        `pick(logits, generated_so_far)` returns the next ids (B,); `on_tokens(ids)` sees each step's ids.
        `prefix` = (kept DynamicCache, its length, its rope deltas): only the rest of the prompt is prefilled.
        `greedy=True` (argmax, no penalties; `pick` unused) runs steps back to back without host round trips.
        """
        import torch

        with torch.inference_mode():
            return self._generate(inputs, max_new_tokens, pick, eos_ids, on_tokens, should_stop, prefix, greedy)

    def _generate(self, inputs: dict[str, Any], max_new_tokens: int, pick: Callable[[Any, Any], Any],
                  eos_ids: set[int], on_tokens: Callable[[Any], None] | None,
                  should_stop: Callable[[], bool] | None, prefix: tuple[Any, int, Any] | None,
                  greedy: bool) -> Any:
        import torch

        self._used_graph = False
        self._fallback = None
        profile = os.environ.get("VLSCOPE_PROFILE_FAST") == "1" and inputs["input_ids"].device.type == "cuda"
        phases: dict[str, float] = {}
        mark = [time.perf_counter()]

        def lap(name: str) -> None:
            if profile:
                torch.cuda.synchronize()
                now = time.perf_counter()
                phases[name] = (now - mark[0]) * 1000
                mark[0] = now

        model = self.model
        self._kw = _cache_kwarg(model)
        input_ids = inputs["input_ids"]
        batch, prompt_len = input_ids.shape
        device = input_ids.device
        max_len = prompt_len + max_new_tokens + 1
        # one cache per shape bucket: reuse it (and its graph) when the next request fits
        bucket = (batch, ((max_len + 255) // 256) * 256, False)
        self._mask = None
        if self._cache is None or self._graph_key != bucket:
            self._new_bucket(bucket, device)
        else:
            self._cache.reset()
        lap("cache")
        if prefix is None:
            prefill = dict(inputs)
            prefill.update({self._kw: self._cache, "use_cache": True, "logits_to_keep": 1})
            model.model.rope_deltas = None  # a text-only prompt must not inherit another request's deltas
            logits = model(**prefill).logits[:, -1, :]
            rope = model.model.rope_deltas
            rope_deltas = (rope if rope is not None else torch.zeros(batch, 1, dtype=torch.long, device=device))
        else:
            kept_kv, kept_len, rope_deltas = prefix
            self._load_prefix(kept_kv, kept_len)
            lap("load_prefix")
            suffix = input_ids[:, kept_len:]
            positions = torch.arange(kept_len, prompt_len, device=device)
            logits = self._forward_tokens(suffix, positions, rope_deltas)
        lap("prefill")
        rope_deltas = rope_deltas.to(device)
        use_graph = self.use_cuda_graph and device.type == "cuda"
        eos = torch.tensor(sorted(eos_ids), device=device) if eos_ids else None
        if greedy:
            generated = self._greedy_loop(logits, rope_deltas, prompt_len, max_new_tokens, eos, on_tokens,
                                          should_stop, use_graph)
        else:
            generated = self._sampling_loop(logits, rope_deltas, prompt_len, max_new_tokens, pick, eos, on_tokens,
                                            should_stop, use_graph)
        lap("decode")
        self.last_stats = FastDecodeStats(used_graph=self._used_graph, prompt_tokens=prompt_len,
                                          new_tokens=int(generated.shape[1]), fallback_reason=self._fallback,
                                          step=self.step_name, phases_ms=phases or None)
        return generated

    def _new_bucket(self, bucket: tuple[int, int, bool], device: Any) -> None:
        """A fresh static cache, input buffers (and no graphs yet) for `bucket` = (batch, cache length, masked)."""
        import torch

        batch, length, masked = bucket
        self._cache = self._new_cache(length, batch)
        self._graph = None
        self._greedy_graph = None
        self._graph_key = bucket
        self._buffers = (
            torch.zeros(batch, 1, dtype=torch.long, device=device),
            torch.zeros(1, dtype=torch.long, device=device),
            torch.zeros(batch, 1, dtype=torch.long, device=device),
        )
        self._mask_buffer = torch.zeros(batch, length, dtype=torch.long, device=device) if masked else None

    def generate_batch(
        self,
        rows: list[dict[str, Any]],
        max_new_tokens: int,
        pick: Callable[[Any, Any], Any],
        eos_ids: set[int],
        on_tokens: Callable[[Any], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        greedy: bool = False,
        pad_id: int = 0,
    ) -> Any:
        """Decode several prompts of any lengths together; returns (B, n) new ids (EOS after a row's end).

        The prompts are left-padded with `pad_id` and prefilled in one forward (`merge_rows`; rows that cannot be
        merged are prefilled one by one and their caches placed right-aligned), into one batched static cache
        (padding masked); then all rows decode in the same steps.
        """
        import torch

        with torch.inference_mode():
            return self._generate_batch(rows, max_new_tokens, pick, eos_ids, on_tokens, should_stop, greedy,
                                        pad_id)

    def _fill_static(self, kept: Any, batch: int) -> None:
        """Allocate the static cache's buffers (shape, dtype, device of a kept cache) for `batch` rows."""
        for static_layer, kept_layer in zip(self._cache.layers, kept.layers):
            if not getattr(static_layer, "is_initialized", True):
                k = kept_layer.keys[:1, :, :1].expand(batch, -1, -1, -1).contiguous()
                v = kept_layer.values[:1, :, :1].expand(batch, -1, -1, -1).contiguous()
                static_layer.lazy_initialization(k, v)

    def _generate_batch(self, rows: list[dict[str, Any]], max_new_tokens: int, pick: Any, eos_ids: set[int],
                        on_tokens: Any, should_stop: Any, greedy: bool, pad_id: int) -> Any:
        import torch

        self._used_graph = False
        self._fallback = None
        model = self.model
        self._kw = _cache_kwarg(model)
        device = rows[0]["input_ids"].device
        lengths = [int(row["input_ids"].shape[1]) for row in rows]
        batch, width = len(rows), max(lengths)
        bucket = (batch, ((width + max_new_tokens + 1 + 255) // 256) * 256, True)
        if self._cache is None or self._graph_key != bucket:
            self._new_bucket(bucket, device)
        else:
            self._cache.reset()
        self._mask = self._mask_buffer
        self._mask.zero_()
        merged = merge_rows(rows, pad_id)
        if merged is not None:
            # one left-padded prefill for all rows: its cache is already laid out as the batch decodes it.
            # Positions count from each row's first real token, as alone: transformers does so itself when the
            # batch holds images or videos (M-RoPE from the attention mask); for text only they are given here.
            model.model.rope_deltas = None
            mask = merged["attention_mask"]
            if not any(key in merged for key in _VISUAL_KEYS):
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
        eos = torch.tensor(sorted(eos_ids), device=device) if eos_ids else None
        use_graph = self.use_cuda_graph and device.type == "cuda"
        if greedy:
            generated = self._greedy_loop(stacked, rope_deltas, width, max_new_tokens, eos, on_tokens, should_stop,
                                          use_graph)
        else:
            generated = self._sampling_loop(stacked, rope_deltas, width, max_new_tokens, pick, eos, on_tokens,
                                            should_stop, use_graph)
        self.last_stats = FastDecodeStats(used_graph=self._used_graph, prompt_tokens=width,
                                          new_tokens=int(generated.shape[1]), fallback_reason=self._fallback,
                                          step=self.step_name)
        return generated

    def _greedy_step(self, tok: Any, pos: Any, rope: Any) -> Any:
        """One greedy step that feeds itself: reads `tok` at `pos`, writes the argmax back, advances `pos`."""
        logits = self._step(tok, pos, rope)
        tok.copy_(logits.argmax(-1, keepdim=True))
        pos.add_(1)
        return tok

    def _greedy_loop(self, logits: Any, rope_deltas: Any, prompt_len: int, max_new: int, eos: Any,
                     on_tokens: Any, should_stop: Any, use_graph: bool, chunk: int = 8) -> Any:
        """Greedy decoding with no host round trip per token: steps are queued back to back and the host
        reads the new tokens every `chunk` steps (to stream them and to stop at EOS)."""
        import torch

        tok, pos, rope = self._buffers
        batch = tok.shape[0]
        device = tok.device
        gen = torch.empty(batch, max_new, dtype=torch.long, device=device)
        gen[:, 0] = logits.argmax(-1)
        tok.copy_(gen[:, :1])
        pos.fill_(prompt_len)
        rope.copy_(rope_deltas.expand(batch, 1) if rope_deltas.shape[0] != batch else rope_deltas)
        step = None
        if use_graph and (self._greedy_graph is not None or max_new > 16):  # capturing costs more than a few steps
            try:
                if self._greedy_graph is None:
                    self._greedy_graph = self._capture_greedy(tok, pos, rope)
                step = self._greedy_graph.replay
                self._used_graph = True
            except Exception as exc:  # noqa: BLE001 - fall back to eager steps
                self._fallback = f"CUDA graph unavailable ({type(exc).__name__}: {exc})"
                log.warning("fast decoding falls back to eager steps: %s", self._fallback)
                self._greedy_graph = None
        if step is None:
            def step() -> None:
                self._greedy_step(tok, pos, rope)
        finished = torch.zeros(batch, dtype=torch.bool)
        eos_cpu = set(eos.tolist()) if eos is not None else set()
        emitted, n = 0, 1
        stop = False
        while True:
            if n - emitted >= chunk or n == max_new or emitted == 0:
                fresh = gen[:, emitted:n].cpu()
                for col in range(fresh.shape[1]):
                    ids = fresh[:, col]
                    if on_tokens is not None:
                        on_tokens(ids)
                    finished |= torch.tensor([int(t) in eos_cpu for t in ids.tolist()])
                    if bool(finished.all()):
                        n = emitted + col + 1
                        stop = True
                        break
                emitted = n
                if stop or n >= max_new or (should_stop is not None and should_stop()):
                    break
            step()
            gen[:, n].copy_(tok[:, 0])
            n += 1
        out = gen[:, :n].clone()
        if eos is not None and batch > 1:
            # rows that ended early: everything after their EOS becomes padding (EOS)
            hit = torch.isin(out, eos)
            after = (hit.cumsum(1) - hit.long()) > 0
            out = out.masked_fill(after, int(eos[0]))
        return out

    def _sampling_loop(self, logits: Any, rope_deltas: Any, prompt_len: int, max_new: int, pick: Any, eos: Any,
                       on_tokens: Any, should_stop: Any, use_graph: bool) -> Any:
        """Sampling (or penalised) decoding: the graph gives logits, the host picks each token."""
        import torch

        device = logits.device
        batch = logits.shape[0]
        static_tok, static_pos, static_rope = self._buffers
        generated = torch.empty(batch, 0, dtype=torch.long, device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        pad = int(eos[0]) if eos is not None else 0
        for step in range(max_new):
            next_ids = pick(logits, generated)
            next_ids = torch.where(finished, torch.full_like(next_ids, pad), next_ids)
            generated = torch.cat([generated, next_ids[:, None]], dim=1)
            if on_tokens is not None:
                on_tokens(next_ids)
            if eos is not None:
                finished |= torch.isin(next_ids, eos)
                if bool(finished.all()):
                    break
            if step == max_new - 1 or (should_stop is not None and should_stop()):
                break
            pos = prompt_len + step
            if use_graph:
                try:
                    static_tok.copy_(next_ids[:, None])
                    static_pos.fill_(pos)
                    static_rope.copy_(rope_deltas.expand(batch, 1) if rope_deltas.shape[0] != batch else rope_deltas)
                    if self._graph is None:
                        self._capture(static_tok, static_pos, static_rope)
                    self._graph.replay()
                    logits = self._graph_logits.clone()
                    self._used_graph = True
                    continue
                except Exception as exc:  # noqa: BLE001 - fall back to the eager loop
                    self._fallback = f"CUDA graph unavailable ({type(exc).__name__}: {exc})"
                    log.warning("fast decoding falls back to eager steps: %s", self._fallback)
                    use_graph = False
                    self._graph = None
            logits = self._step(next_ids[:, None], torch.tensor([pos], device=device), rope_deltas)
        return generated

    def _capture_greedy(self, tok: Any, pos: Any, rope: Any) -> Any:
        import torch

        saved = [c.clone() for c in self._counters()]
        saved_tok, saved_pos = tok.clone(), pos.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up runs for real: restore what it advanced
                self._greedy_step(tok, pos, rope)
                for counter, value in zip(self._counters(), saved):
                    counter.copy_(value)
                tok.copy_(saved_tok)
                pos.copy_(saved_pos)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._greedy_step(tok, pos, rope)
        return graph

    def _capture(self, tok: Any, pos: Any, rope: Any) -> Any:
        import torch

        saved = [c.clone() for c in self._counters()]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up: writes K/V at this and the next position, rewritten later
                self._step(tok, pos, rope)
                for counter, value in zip(self._counters(), saved):
                    counter.copy_(value)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = self._step(tok, pos, rope)
        self._graph = graph
        self._graph_logits = logits
        return logits


_TOKEN_KEYS = {"input_ids": None, "attention_mask": 0, "mm_token_type_ids": 0}  # left-padded (None: pad_id)
_VISUAL_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")  # concatenated


MERGED_PREFILL_TOKENS = 8192
"""Largest padded batch (rows x longest prompt) prefilled in one forward: beyond it the activations of one
merged forward would outgrow those of the longest prompt alone, so rows are prefilled one by one."""


def merge_rows(rows: list[dict[str, Any]], pad_id: int) -> dict[str, Any] | None:
    """Several single-prompt processor outputs as one left-padded batch, or None when a row has other keys or
    the padded batch exceeds `MERGED_PREFILL_TOKENS`.

    Token rows are left-padded (pad_id / 0); images and videos are concatenated in row order, which is the
    order in which the model assigns them to their placeholder tokens.
    """
    import torch

    known = set(_TOKEN_KEYS) | set(_VISUAL_KEYS)
    if any(set(row) - known or "attention_mask" not in row or row["input_ids"].shape[0] != 1 for row in rows):
        return None
    width = max(int(row["input_ids"].shape[1]) for row in rows)
    if width * len(rows) > MERGED_PREFILL_TOKENS:
        return None
    merged: dict[str, Any] = {}
    for key, fill in _TOKEN_KEYS.items():
        present = [key in row for row in rows]
        if not any(present):
            continue
        if not all(present):
            return None
        value = pad_id if fill is None else fill
        merged[key] = torch.cat([torch.nn.functional.pad(row[key], (width - row[key].shape[1], 0), value=value)
                                 for row in rows], dim=0)
    for key in _VISUAL_KEYS:
        parts = [row[key] for row in rows if key in row]
        if parts:
            merged[key] = torch.cat(parts, dim=0)
    return merged


def make_picker(params: Any, prompt_ids: Any) -> Callable[[Any, Any], Any]:
    """The next-token rule of `params` (GenerationParams): penalties, then greedy or temperature/top-k/top-p."""
    import torch

    def pick(logits: Any, generated: Any) -> Any:
        scores = logits.float()
        seen = torch.cat([prompt_ids, generated], dim=1)
        if params.repetition_penalty != 1.0:
            got = scores.gather(1, seen)
            got = torch.where(got > 0, got / params.repetition_penalty, got * params.repetition_penalty)
            scores = scores.scatter(1, seen, got)
        if params.presence_penalty and generated.shape[1]:
            mask = torch.zeros_like(scores).scatter_(1, generated, 1.0)
            scores = scores - params.presence_penalty * mask
        if params.greedy:
            return scores.argmax(-1)
        scores = scores / params.temperature
        if params.top_k and params.top_k > 0:
            kth = torch.topk(scores, min(params.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if params.top_p < 1.0:
            ordered, order = torch.sort(scores, descending=True, dim=-1)
            cumulative = ordered.softmax(-1).cumsum(-1)
            drop = cumulative - ordered.softmax(-1) > params.top_p
            ordered = ordered.masked_fill(drop, float("-inf"))
            scores = torch.full_like(scores, float("-inf")).scatter(1, order, ordered)
        probs = scores.softmax(-1)
        return torch.multinomial(probs, 1).squeeze(1)

    return pick

"""The decode loops of `core.vlm.fastdecode.FastDecoder`, for B >= 1 rows, on CUDA graphs where they can run.

Greedy steps feed themselves on the device (one captured graph per step, replayed back to back) and the host
reads the new tokens every few steps; sampled or penalised steps replay a graph that gives the logits and the
host picks each token. When capture fails, the same steps run eagerly.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class DecodeLoops:
    """Mixed into FastDecoder. Uses its `_step(tokens, position, rope_deltas)`, `_counters()`, the input buffers
    `_buffers` = (tokens, position, rope deltas) of the current bucket, and its graphs `_graph` / `_greedy_graph`;
    records `_used_graph` and `_fallback` for the request's stats."""

    _buffers: tuple[Any, Any, Any]
    _graph: Any
    _greedy_graph: Any
    _graph_logits: Any
    _used_graph: bool
    _fallback: str | None

    def _step(self, tokens: Any, cache_position: Any, rope_deltas: Any) -> Any:
        raise NotImplementedError

    def _counters(self) -> list[Any]:
        raise NotImplementedError

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
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # other threads may use CUDA
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
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # other threads may use CUDA
            logits = self._step(tok, pos, rope)
        self._graph = graph
        self._graph_logits = logits
        return logits

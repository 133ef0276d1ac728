"""The language model over a video prompt's prefix from visual features (no pixels, no vision tower): all at once
(`prefill`), or part by part as a video's parts are encoded (`PrefixBuilder`, used by `core.vlm.prefixstream`).
Qwen3VLModel.forward's merge is done by hand: the features scattered into the token embeddings, DeepStack added
to the first layers' hidden states at the visual positions, M-RoPE positions from the whole prompt."""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from typing import Any

from core.vlm.base import InvalidRequest

STREAM_CHUNK = 4096
"""Tokens per chunk of a prefix prefilled during an ingest where one pass would fit: the same shapes for every
video, so the attention's plans are built once (`PrefixBuilder.warm`). 8192 measured worse on the H200 (first answer
9.55 s against 6.06 s; raw `benchmarks/results/2026-12-04-h200-e2e-stream-chunk-8192.txt`)."""


def prefill(model: Any, inputs: dict[str, Any], features: Any, chunk_tokens: int = 0) -> tuple[Any, Any]:
    """Qwen3VLModel.forward's merge done by hand (no pixels): the language model over the prefix with the features
    scattered in and DeepStack added, `chunk_tokens` at a time (0: all at once) so activation memory stays bounded;
    returns (KV cache, rope deltas) and sets the model's rope deltas."""
    builder = PrefixBuilder(model, chunk_tokens)
    builder.set_prompt(inputs)
    builder.feed(features.pooler, features.deepstack, final=True)
    return builder.finish()


class PrefixBuilder:
    """The language model over a video prompt's prefix, fed part by part as the video's features come (an ingest),
    or all at once (`prefill`). `set_prompt` gives the whole prompt's inputs (again when they change: the token ids
    already prefilled must stay); each `feed` gives the next visual tokens' feature rows, and the prompt is
    prefilled up to the last of them. `finish` prefills the rest. Chunks after the first attend through
    `core.vlm.chunk_attention` (two maskless calls merged by their log-sum-exp). With `chunk_tokens`, a feed that is
    not the last prefills whole chunks only (the rest waits for the next feed), so the chunks are the same for
    every video whatever its parts: cuDNN builds a plan per new attention shape (~80 ms on the H200), and a part per
    chunk made two new shapes a part. Hold the model's lock."""

    def __init__(self, model: Any, chunk_tokens: int = 0) -> None:
        self.model, self.chunk_tokens = model, int(chunk_tokens)
        self.kv: Any = None
        self.done = 0
        """Prompt tokens prefilled."""
        self.rows = 0
        """Visual feature rows given."""
        self.used = 0
        """Visual feature rows prefilled (the others are held for the next chunk)."""
        self._held: tuple[Any, list[Any]] | None = None
        self._ids: Any = None
        self._mask: Any = None
        self._visual: list[int] = []
        self._positions: Any = None
        self._deltas: Any = None

    def set_prompt(self, inputs: dict[str, Any]) -> None:
        """The whole prompt (input_ids, mm_token_type_ids, video_grid_thw); ValueError when its first tokens are not
        the ones already prefilled."""
        import torch

        ids = inputs["input_ids"]
        if self.done and (ids.shape[1] < self.done or
                          not torch.equal(ids[:, :self.done], self._ids[:, :self.done].to(ids.device))):
            raise ValueError("the prompt of the video so far does not continue the tokens already prefilled")
        mask = ids == self.model.config.video_token_id
        positions, deltas = self.model.model.get_rope_index(
            ids, mm_token_type_ids=inputs["mm_token_type_ids"], video_grid_thw=inputs["video_grid_thw"],
            attention_mask=torch.ones_like(ids))
        visual = torch.nonzero(mask[0]).flatten().tolist()
        if len(visual) < self.rows:
            raise ValueError(f"the prompt has {len(visual)} video tokens, {self.rows} are prefilled already")
        self._ids, self._mask, self._visual, self._positions, self._deltas = ids, mask, visual, positions, deltas

    def feed(self, pooler: Any, deepstack: list[Any], final: bool = False) -> None:
        """Prefill the prompt up to the last of the next `pooler.shape[0]` visual tokens (with `final`: to the
        prompt's end, every visual token then given), those tokens taking `pooler`'s rows and `deepstack`."""
        import torch

        ids = self._ids
        rows = int(pooler.shape[0])
        total = len(self._visual)
        if self.rows + rows > total or (final and self.rows + rows != total):
            raise InvalidRequest(f"The prompt has {total} video tokens, the features {self.rows + rows}.")
        if self._held is not None:  # rows given before, not prefilled yet: they come first
            held, held_deep = self._held
            self._held = None
            if rows:
                pooler = torch.cat([held, pooler.to(held.device)])
                deepstack = [torch.cat([a, b.to(a.device)]) for a, b in zip(held_deep, deepstack)]
            else:
                pooler, deepstack = held, held_deep
        self.rows += rows
        end = int(ids.shape[1]) if final else (self._visual[self.rows - 1] + 1 if self.rows else self.done)
        step = (end - self.done) if self.chunk_tokens <= 0 else self.chunk_tokens
        if not final and self.chunk_tokens > 0:
            end = self.done + (end - self.done) // step * step
        start, taken = self.done, 0
        while start < end:
            stop = min(end, start + max(1, step))
            used = bisect_left(self._visual, stop) - self.used - taken
            self._forward(start, stop, pooler[taken:taken + used], [d[taken:taken + used] for d in deepstack])
            taken += used
            start = stop
        self.used += taken
        self.done = end
        if taken < int(pooler.shape[0]):
            self._held = (pooler[taken:], [d[taken:] for d in deepstack])

    def chunk_shapes(self) -> list[tuple[int, int]]:
        """(queries, keys) of every chunk of this prompt fed part by part: each chunk against the keys up to its end."""
        total, step = int(self._ids.shape[1]), self.chunk_tokens
        if step <= 0 or total <= step:
            return []
        shapes = [(step, end) for end in range(step, total + 1, step)]
        if total % step:
            shapes.append((total % step, total))
        return shapes

    def warm(self) -> list[tuple[int, int]]:
        """Build the attention plans of `chunk_shapes` before the first part comes (on CUDA; the caller waits for
        the first frames meanwhile anyway): the past keys are read from a buffer of the prompt's length, as the
        filled cache gives them, so the strides, which cuDNN's plans depend on too, are the real ones."""
        import torch

        from core.vlm.chunk_attention import attend_chunk

        shapes = self.chunk_shapes()
        device = self._ids.device
        if not shapes or device.type != "cuda":
            return shapes
        text = getattr(self.model.config, "text_config", self.model.config)
        heads, kv_heads = int(text.num_attention_heads), int(text.num_key_value_heads)
        dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
        dtype = next(self.model.model.language_model.parameters()).dtype
        with torch.inference_mode():
            keys = torch.zeros(1, kv_heads, int(self._ids.shape[1]), dim, device=device, dtype=dtype)
            for queries, end in shapes:
                q = torch.zeros(1, queries, heads, dim, device=device, dtype=dtype).transpose(1, 2)
                attend_chunk(q, keys[:, :, :end], keys[:, :, :end], dim ** -0.5)
        return shapes

    def _forward(self, start: int, stop: int, pooler: Any, deepstack: list[Any]) -> None:
        import inspect

        import torch

        from core.vlm.chunk_attention import chunked_attention

        core = self.model.model
        lm = core.language_model
        with torch.inference_mode():
            emb = core.get_input_embeddings()(self._ids[:, start:stop])
            part = self._mask[:, start:stop]
            visual = int(pooler.shape[0])
            if visual:
                emb = emb.masked_scatter(part[..., None].expand_as(emb), pooler.to(emb.device, emb.dtype))
            deep = {"visual_pos_masks": part,
                    "deepstack_visual_embeds": [d.to(emb.device, emb.dtype) for d in deepstack]}
            name = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
            if self.kv is None:
                self.kv = _filled_cache(self.model, int(self._ids.shape[1]))
            past = {} if self.kv is None else {name: self.kv}
            switch = chunked_attention(lm) if self.kv is not None else contextlib.nullcontext()
            with switch:
                out = lm(inputs_embeds=emb, attention_mask=torch.ones(1, stop, dtype=torch.long, device=emb.device),
                         position_ids=self._positions[..., start:stop], use_cache=True, **past,
                         **(deep if deepstack and visual else {}))
            got = getattr(out, "cache", None)
            self.kv = got if got is not None else out.past_key_values

    def finish(self) -> tuple[Any, Any]:
        """Prefill the rest of the prompt (its every visual token fed): (KV cache, rope deltas); sets the model's
        rope deltas."""
        if self.done < int(self._ids.shape[1]) or self.kv is None:
            self.feed(self._ids.new_zeros(0), [], final=True)
        elif self.rows != len(self._visual) or self._held is not None:
            raise InvalidRequest(f"The prompt has {len(self._visual)} video tokens, the features {self.rows}.")
        self.kv = _plain(self.kv)
        self.model.model.rope_deltas = self._deltas
        return self.kv, self._deltas


def _filled_cache(model: Any, total: int) -> Any:
    """A DynamicCache whose layers write into key and value buffers made once for the whole prompt of `total`
    tokens: a cache grown by concatenation allocates every layer again at every chunk (and the GPU's allocator then
    maps memory while the model runs). None where the language model has layers other than full attention
    (Qwen3.5's linear attention keeps its own states): the model then makes its own cache."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    text = getattr(model.config, "text_config", model.config)
    kinds = set(getattr(text, "layer_types", None) or ["full_attention"])
    if kinds != {"full_attention"}:
        return None

    class FilledLayer(DynamicLayer):
        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            super().lazy_initialization(key_states, value_states)
            b, h, _, d = key_states.shape
            self.buffers = (key_states.new_empty(b, h, total, d),
                            value_states.new_empty(b, h, total, value_states.shape[-1]))
            self.filled = 0

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.filled + int(key_states.shape[-2])
            if end > total:
                raise ValueError(f"{end} tokens for a prompt of {total}")
            keys, values = self.buffers
            keys[:, :, self.filled:end].copy_(key_states)
            values[:, :, self.filled:end].copy_(value_states)
            self.filled = end
            self.keys, self.values = keys[:, :, :end], values[:, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.filled if self.is_initialized else 0

    kv = DynamicCache()
    kv.layers = [FilledLayer() for _ in range(int(text.num_hidden_layers))]
    return kv


def _plain(kv: Any) -> Any:
    """The prefix's cache as a plain DynamicCache (what the prefix tiers, the disk tier and decoding take): a filled
    cache's buffers become its layers' keys and values, without a copy."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    layers = getattr(kv, "layers", None) or []
    if not layers or not all(hasattr(layer, "buffers") for layer in layers):
        return kv
    plain = DynamicCache()
    plain.layers = []
    for layer in layers:
        keys, values = layer.buffers
        one = DynamicLayer()
        one.lazy_initialization(keys[:, :, :0], values[:, :, :0])
        one.keys, one.values = keys[:, :, :layer.filled], values[:, :, :layer.filled]
        plain.layers.append(one)
        layer.buffers = None
    return plain

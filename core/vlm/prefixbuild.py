"""The language model over a video prompt's prefix from visual features (no pixels, no vision tower): all at once
(`prefill`), or part by part as a video's parts are encoded (`PrefixBuilder`, used by `core.vlm.prefixstream`).
Qwen3VLModel.forward's merge is done by hand: the features scattered into the token embeddings, DeepStack added
to the first layers' hidden states at the visual positions, M-RoPE positions from the whole prompt."""

from __future__ import annotations

import contextlib
from typing import Any

from core.vlm.base import InvalidRequest


def prefill(model: Any, inputs: dict[str, Any], features: Any, chunk_tokens: int = 0) -> tuple[Any, Any]:
    """Qwen3VLModel.forward's merge done by hand (no pixels): the language model over the prefix with the features
    scattered in and DeepStack added, `chunk_tokens` at a time (0: all at once) so activation memory stays bounded;
    returns (KV cache, rope deltas) and sets the model's rope deltas."""
    builder = PrefixBuilder(model, chunk_tokens)
    builder.feed(inputs, features.pooler, features.deepstack, final=True)
    return builder.finish(inputs)


class PrefixBuilder:
    """The language model over a video prompt's prefix, fed part by part as the video's features come (an ingest),
    or all at once (`prefill`). Each `feed` gives the prompt inputs of the video so far (`prompt_inputs` of its
    plan up to that part: the token ids of the parts before are a prefix of them) and the next parts' feature rows;
    the tokens up to that part's last visual token are prefilled. `finish` prefills the rest of the whole prompt.
    Chunks after the first attend through `core.vlm.chunk_attention` (two maskless calls merged), as fast as one
    pass. Hold the model's lock around each call."""

    def __init__(self, model: Any, chunk_tokens: int = 0) -> None:
        self.model, self.chunk_tokens = model, int(chunk_tokens)
        self.kv: Any = None
        self.done = 0
        """Prompt tokens prefilled."""
        self.rows = 0
        """Visual feature rows used."""
        self._fed: list[Any] = []
        self._positions: Any = None
        self._deltas: Any = None

    def _prompt(self, inputs: dict[str, Any]) -> tuple[Any, Any, Any]:
        """(ids, video-token mask, positions) of `inputs`, checked to continue what was fed before."""
        import torch

        core = self.model.model
        ids = inputs["input_ids"]
        if self.done:
            fed = torch.cat(self._fed, dim=1)
            if ids.shape[1] < self.done or not torch.equal(ids[:, :self.done], fed.to(ids.device)):
                raise ValueError("the prompt of the video so far does not continue the tokens already prefilled")
        mask = ids == self.model.config.video_token_id
        positions, deltas = core.get_rope_index(ids, mm_token_type_ids=inputs["mm_token_type_ids"],
                                                video_grid_thw=inputs["video_grid_thw"],
                                                attention_mask=torch.ones_like(ids))
        self._deltas = deltas
        return ids, mask, positions

    def feed(self, inputs: dict[str, Any], pooler: Any, deepstack: list[Any], final: bool = False) -> None:
        """Prefill the prompt `inputs` up to its last visual token (with `final`: to its end), the visual tokens
        not prefilled yet taking `pooler` (their rows, in order) and `deepstack`."""
        import torch

        ids, mask, positions = self._prompt(inputs)
        visual = torch.nonzero(mask[0]).flatten()
        rows = int(pooler.shape[0])
        if self.rows + rows != int(visual.numel()):
            raise InvalidRequest(f"The prompt has {int(visual.numel())} video tokens, the features "
                                 f"{self.rows + rows}.")
        end = int(ids.shape[1]) if final or not rows else int(visual[-1]) + 1
        step = (end - self.done) if self.chunk_tokens <= 0 else self.chunk_tokens
        start, taken = self.done, 0
        while start < end:
            stop = min(end, start + max(1, step))
            used = int(mask[:, start:stop].sum())
            self._forward(ids, mask, positions, start, stop, pooler[taken:taken + used],
                          [d[taken:taken + used] for d in deepstack])
            taken += used
            start = stop
        self._fed.append(ids[:, self.done:end])
        self.rows += rows
        self.done = end

    def _forward(self, ids: Any, mask: Any, positions: Any, start: int, stop: int, pooler: Any,
                 deepstack: list[Any]) -> None:
        import inspect

        import torch

        from core.vlm.chunk_attention import chunked_attention

        core = self.model.model
        lm = core.language_model
        with torch.inference_mode():
            emb = core.get_input_embeddings()(ids[:, start:stop])
            part = mask[:, start:stop]
            visual = int(part.sum())
            if visual:
                emb = emb.masked_scatter(part[..., None].expand_as(emb), pooler.to(emb.device, emb.dtype))
            deep = {"visual_pos_masks": part,
                    "deepstack_visual_embeds": [d.to(emb.device, emb.dtype) for d in deepstack]}
            name = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
            past = {} if self.kv is None else {name: self.kv}
            switch = chunked_attention(lm) if self.kv is not None else contextlib.nullcontext()
            with switch:
                out = lm(inputs_embeds=emb, attention_mask=torch.ones(1, stop, dtype=torch.long, device=emb.device),
                         position_ids=positions[..., start:stop], use_cache=True, **past,
                         **(deep if deepstack and visual else {}))
            got = getattr(out, "cache", None)
            self.kv = got if got is not None else out.past_key_values

    def finish(self, inputs: dict[str, Any]) -> tuple[Any, Any]:
        """Prefill the rest of the whole prompt `inputs` (its every visual token fed): (KV cache, rope deltas); sets
        the model's rope deltas."""
        if self.done < int(inputs["input_ids"].shape[1]) or self.kv is None:
            empty = self.model.model.get_input_embeddings().weight[:0]
            self.feed(inputs, empty, [], final=True)
        self.model.model.rope_deltas = self._deltas
        return self.kv, self._deltas

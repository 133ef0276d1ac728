"""A video's kept prefix prefilled while the video is still being ingested.

The first question about a new video waited for the whole ingest (decode, preprocess, vision tower), then for the
language model over the whole prefix: 4.1 s + 3.2 s on the H200 for the 10-minute video. The prefix (system prompt,
the video's timestamps and visual tokens) does not depend on the question, so an ingest told which prompt its video
goes into (`FeatureMemory.ingest(..., prefix_of=...)`) hands the encoded parts to a `PrefixStream`, in order, as
they come when the frames are decoded in worker processes (else once they are all decoded: beside decoding threads
the prefill ran at half speed): the language model prefills their tokens in aligned chunks
(`core.vlm.prefixbuild.PrefixBuilder`, its attention plans built ahead by `warm`). When the ingest ends,
the prefix is complete and kept (`PrefixStore`, and its disk tier), and the question finds it there.

The token ids of the video so far are rebuilt from the plan of the parts encoded (their real frame numbers give the
timestamps), and each rebuild is checked to continue what was prefilled; anything that does not fit drops the
stream (the question then prefills as before): never a wrong prefix.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import replace
from typing import Any

from core.vlm.features import FeatureMeta, prompt_inputs
from core.vlm.featurestore import uses_features
from core.vlm.loading import dtype_name
from core.vlm.prefix import Prefix, cache_nbytes, split_prefix
from core.vlm.prefixbuild import STREAM_CHUNK, PrefixBuilder

log = logging.getLogger(__name__)


class PrefixStream:
    """The kept prefix `key` (text `prefix_text`) of a video being ingested (planned by `meta`), prefilled part by
    part. The prompt's tokens are made once from the plan, and again only when a part's real frame numbers differ
    from the plan's (a key frame taken for the frame asked for), so that its timestamps are the ones decoded."""

    def __init__(self, runner: Any, key: str, prefix_text: str, lock: Any, meta: FeatureMeta,
                 chunk_tokens: int = 0) -> None:
        self.runner, self.key, self.prefix_text, self.lock, self.meta = runner, key, prefix_text, lock, meta
        self.builder = PrefixBuilder(runner.model, chunk_tokens or STREAM_CHUNK)
        self.frames = list(meta.frame_indices)
        """The frame numbers the prompt's tokens were made from: the real ones so far, the plan's after them."""
        self.groups = 0
        """Temporal groups of the video prefilled so far."""
        self.seconds = 0.0
        self.prompts = 0
        """Times the prompt's tokens were made (1 when every part came at its planned frames)."""
        self._inputs: dict[str, Any] | None = None

    def _prompt(self) -> None:
        """Make the prompt's tokens of `frames` (on the CPU, outside the lock) and hand them to the builder."""
        inputs = prompt_inputs(self.runner.processor, self.prefix_text,
                               replace(self.meta, frame_indices=list(self.frames)), "cpu")
        self.prompts += 1
        with self.lock:
            inputs = {k: v.to(self.runner.device) for k, v in inputs.items()}
            self.builder.set_prompt(inputs)
        self._inputs = inputs

    def warm(self) -> None:
        """Before the first part: the prompt's tokens made, and the attention's plans built for its chunks (about
        1 s of host work on the H200 for the 10-minute video, while the first frames are still being decoded)."""
        import time

        start = time.perf_counter()
        if self._inputs is None:
            self._prompt()
        with self.lock:
            self.builder.warm()
        self.seconds += time.perf_counter() - start

    def feed(self, frames: list[int], groups: int, pooler: Any, deepstack: list[Any]) -> None:
        """The next part: `frames`, the real frame numbers of the parts so far (they end at temporal group
        `groups`); `pooler`, `deepstack`: that part's feature rows."""
        import time

        start = time.perf_counter()
        if self._inputs is None or list(frames) != self.frames[:len(frames)]:
            self.frames = list(frames) + self.frames[len(frames):]
            self._prompt()
        with self.lock:
            self.builder.feed(pooler, deepstack)
        self.groups = groups
        self.seconds += time.perf_counter() - start

    def finish(self, meta: FeatureMeta) -> Prefix:
        """The whole prefix of the video as ingested (`meta`), kept in the runner's prefix store."""
        import time

        start = time.perf_counter()
        if self._inputs is None or list(meta.frame_indices) != self.frames:
            self.frames = list(meta.frame_indices)
            self._prompt()
        inputs = self._inputs
        assert inputs is not None
        with self.lock:
            kv, rope = self.builder.finish()
        model = self.runner.model
        name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        entry = Prefix(key=self.key, input_ids=inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"],
                       grids={"video_grid_thw": inputs["video_grid_thw"]}, kv=kv,
                       rope_deltas=None if rope is None else rope.clone(), nbytes=cache_nbytes(kv), cache_kwarg=name)
        self.builder.kv = None
        self.runner.prefixes.put(entry)
        self.seconds += time.perf_counter() - start
        log.info("prefix %s prefilled during the ingest (%d tokens, %.2f s, prompt made %d times)", self.key[:12],
                 int(inputs["input_ids"].shape[1]), self.seconds, self.prompts)
        return entry

    def drop(self) -> None:
        self.builder.kv = None


def stream_prefix(runner: Any, messages: list[Any], meta: FeatureMeta) -> PrefixStream | None:
    """A `PrefixStream` that prefills the kept prefix of `messages` (one video, kept through the visual memory) while
    that video (planned by `meta`) is ingested, or None: the runner keeps no prefixes, or this one is kept already (in any tier)."""
    if runner.settings.prefix_cache_gb <= 0 or runner.features is None:
        return None
    text, parts = runner.render(messages)
    if not uses_features(parts, runner.features):
        return None
    split = split_prefix(text, parts, f"{runner.settings.model}|{dtype_name(runner.dtype)}")
    if split is None:
        return None
    key, prefix_text, _ = split
    disk = runner.prefixes.disk
    if runner.prefixes.tier_of(key) is not None or (disk is not None and disk.contains(key)):
        return None
    tokens = meta.grid[0] * (meta.tokens_per_group + 12) + 64  # the visual tokens, each group's timestamp, the rest
    return PrefixStream(runner, key, prefix_text, runner.features.lock, meta, runner.features.chunk_for(tokens))

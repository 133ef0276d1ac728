"""Rows of a decode batch: single-prompt inputs merged into one left-padded batch, and the next-token rule."""

from __future__ import annotations

from typing import Any, Callable

TOKEN_KEYS = {"input_ids": None, "attention_mask": 0, "mm_token_type_ids": 0}  # left-padded (None: pad_id)
VISUAL_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")  # concatenated


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

    known = set(TOKEN_KEYS) | set(VISUAL_KEYS)
    if any(set(row) - known or "attention_mask" not in row or row["input_ids"].shape[0] != 1 for row in rows):
        return None
    width = max(int(row["input_ids"].shape[1]) for row in rows)
    if width * len(rows) > MERGED_PREFILL_TOKENS:
        return None
    merged: dict[str, Any] = {}
    for key, fill in TOKEN_KEYS.items():
        present = [key in row for row in rows]
        if not any(present):
            continue
        if not all(present):
            return None
        value = pad_id if fill is None else fill
        merged[key] = torch.cat([torch.nn.functional.pad(row[key], (width - row[key].shape[1], 0), value=value)
                                 for row in rows], dim=0)
    for key in VISUAL_KEYS:
        parts = [row[key] for row in rows if key in row]
        if parts:
            merged[key] = torch.cat(parts, dim=0)
    return merged


def padded_prompts(rows: list[dict[str, Any]], pad_id: int) -> Any:
    """The rows' prompt ids left-padded with `pad_id` to the longest, (B, width): what penalties look back at."""
    import torch

    if len(rows) == 1:
        return rows[0]["input_ids"]
    width = max(int(r["input_ids"].shape[1]) for r in rows)
    return torch.stack([torch.nn.functional.pad(r["input_ids"][0], (width - r["input_ids"].shape[1], 0), value=pad_id)
                        for r in rows])


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

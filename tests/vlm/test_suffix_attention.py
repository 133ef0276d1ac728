"""A question's tokens after a kept prefix (core/vlm/suffix_attention.py): the same attention as transformers' masked
SDPA over the static cache, in splits of the kept keys, and the follow-ups of the fast path go through it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import core.vlm.suffix_attention as S
from core.settings import Settings
from core.vlm import GenerationParams, VideoPart, user
from core.vlm.local import LocalEngine


def _masked_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kept: int) -> torch.Tensor:
    """What transformers does: keys and values repeated to the query heads, a mask over the whole cache."""
    n, groups = q.shape[2], q.shape[1] // k.shape[1]
    pos = torch.arange(kept, kept + n, device=q.device)
    mask = (torch.arange(k.shape[2], device=q.device)[None, :] <= pos[:, None])[None, None]
    rep = lambda t: t.repeat_interleave(groups, dim=1)  # noqa: E731
    return torch.nn.functional.scaled_dot_product_attention(q, rep(k), rep(v), attn_mask=mask)


@pytest.mark.parametrize("kept,n,split,rows", [(0, 5, 1024, 2048), (37, 1, 1024, 2048), (3000, 7, 1024, 2048),
                                              (3001, 9, 400, 2048), (701, 12, 64, 2048), (3001, 9, 400, 36)],
                         ids=["no prefix", "one token", "splits of 1,500", "splits and a rest", "ten splits",
                              "enough queries: no splits"])
def test_equals_masked_sdpa_over_the_static_cache(kept: int, n: int, split: int, rows: int, monkeypatch) -> None:
    monkeypatch.setattr(S, "SPLIT_KEYS", split)
    monkeypatch.setattr(S, "ENOUGH_ROWS", rows)
    seen: list[int] = []
    original = S.attend_lse
    monkeypatch.setattr(S, "attend_lse", lambda q, *a: seen.append(q.shape[0]) or original(q, *a))
    g = torch.Generator().manual_seed(kept + n)
    cache = kept + n + 300  # a static cache is longer than what is in it: the rest must be ignored
    q = torch.randn(1, 8, n, 32, generator=g)
    k = torch.randn(1, 2, cache, 32, generator=g) * 2
    v = torch.randn(1, 2, cache, 32, generator=g)
    k[:, :, kept + n:], v[:, :, kept + n:] = 1e4, 1e4  # garbage past the question: read, the output would show it
    got = S.attend_after(q.transpose(1, 2).contiguous().transpose(1, 2), k, v, kept)  # q as the model hands it
    torch.testing.assert_close(got, _masked_sdpa(q, k, v, kept), rtol=1e-5, atol=1e-5)
    # the calls' batch: the question's own keys (1), then the kept keys in splits side by side, then their rest
    splits = 1 if 4 * n >= rows else max(1, kept // split)
    assert seen == ([1] + ([splits] if kept else []) + ([1] if kept and kept % splits else []))


def test_refuses_a_batch_or_a_cache_too_short() -> None:
    with pytest.raises(ValueError, match="one row"):
        S.attend_after(torch.zeros(2, 4, 3, 16), torch.zeros(2, 2, 50, 16), torch.zeros(2, 2, 50, 16), 10)
    with pytest.raises(ValueError, match="13 keys"):
        S.attend_after(torch.zeros(1, 4, 3, 16), torch.zeros(1, 2, 12, 16), torch.zeros(1, 2, 12, 16), 10)


def _video(seed: int) -> VideoPart:
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(8)]
    return VideoPart(frames, [30 * i for i in range(8)], source_fps=30.0, total_frames=240, cache_key="clip")


def test_follow_ups_on_the_fast_path_attend_through_it_and_answer_as_a_recompute(tiny_model_dir: Path,
                                                                                 tmp_path: Path, monkeypatch) -> None:
    greedy = GenerationParams.greedy_defaults(12)
    asks = ["What happens first?", "And then?", "Which colour is the last frame?"]
    plain = LocalEngine(Settings(model=str(tiny_model_dir), cache_dir=tmp_path / "a", fast_decode="on",
                                 prefix_cache_gb=0))
    plain.load()
    expected = [plain.generate([user(_video(3), q)], greedy).text for q in asks]
    plain.close()
    calls: list[tuple[int, int]] = []
    original = S.attend_after

    def spy(q, k, v, kept, scale=None):
        calls.append((kept, q.shape[2]))
        return original(q, k, v, kept, scale)

    monkeypatch.setattr(S, "attend_after", spy)
    engine = LocalEngine(Settings(model=str(tiny_model_dir), cache_dir=tmp_path / "b", fast_decode="on",
                                  prefix_cache_gb=1.0))
    engine.load()
    try:
        got = [engine.generate([user(_video(3), q)], greedy) for q in asks]
        lm = engine.model.model.language_model
        assert lm.config._attn_implementation == "sdpa"  # switched back after each question
    finally:
        engine.close()
    assert [r.text for r in got] == expected
    assert got[1].metrics.reused_prefix_tokens > 0 and got[2].metrics.reused_prefix_tokens > 0
    layers = len(lm.layers)
    kept = got[1].metrics.reused_prefix_tokens
    # every question, the first too (its video's prefix is prefilled and kept first), in every layer, with the
    # question's own tokens only
    assert len(calls) == 3 * layers and all(c[0] == kept for c in calls)
    assert [calls[i * layers][1] for i in range(3)] == [r.prompt_tokens - kept for r in got]


def test_only_for_one_row_of_an_sdpa_model(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    lm = model.model.language_model
    with S.suffix_attention(model, 10) as on:
        assert on and lm.config._attn_implementation == S.NAME
    assert lm.config._attn_implementation == "sdpa"
    with S.suffix_attention(model, 10, batch=2) as on:
        assert not on and lm.config._attn_implementation == "sdpa"
    with S.suffix_attention(object(), 10) as on:  # no language model: nothing to switch
        assert not on
    with pytest.raises(RuntimeError, match="outside"):
        S.suffix_attention_forward(None, torch.zeros(1, 4, 2, 16), torch.zeros(1, 2, 4, 16), torch.zeros(1, 2, 4, 16),
                                   None)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_on_cuda_in_bf16_as_close_to_float32_as_the_masked_call_with_the_flash_kernel() -> None:
    """The 4B's heads after the 10-minute video: 49,999 kept positions in a static cache of 52,480, 21 tokens."""
    from core.vlm import chunk_attention

    g = torch.Generator(device="cuda").manual_seed(0)
    kept, n, cache = 49_999, 21, 52_480
    q = torch.randn(1, 32, n, 128, device="cuda", generator=g)
    k = torch.randn(1, 8, cache, 128, device="cuda", generator=g)
    v = torch.randn(1, 8, cache, 128, device="cuda", generator=g)
    ref = _masked_sdpa(q, k, v, kept)
    bf = [t.bfloat16() for t in (q, k, v)]
    got = S.attend_after(*bf, kept)
    plain = _masked_sdpa(*bf, kept)
    err, err_plain = (got.float() - ref).abs().max().item(), (plain.float() - ref).abs().max().item()
    assert err <= 2 * err_plain + 1e-3, (err, err_plain)
    assert chunk_attention._kernel.get("cuda:" + ",".join(S.ORDER)) == "flash"


def test_warming_is_for_cuda_and_never_fails(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForImageTextToText

    assert S.warm(AutoModelForImageTextToText.from_pretrained(tiny_model_dir)) is False  # nothing to load on a CPU
    assert S.warm(None) is False  # a model without a language model: nothing, no error


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_on_cuda_warming_runs_the_kernels_once(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForImageTextToText

    from core.vlm import chunk_attention

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).to("cuda")
    assert S.warm(model) is True
    assert chunk_attention._kernel.get("cuda:" + ",".join(S.ORDER)) == "flash"

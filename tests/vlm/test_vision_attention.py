"""The vision tower's equal frame groups in one attention call (core.vlm.vision_attention): the same features as
transformers' call per group, on the loaded tiny model; groups of several sizes keep transformers' path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.settings import Settings
from core.vlm import features as F
from core.vlm.local import LocalEngine
from core.vlm.types import VideoPart


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> LocalEngine:
    e = LocalEngine(Settings(model=str(tiny_model_dir), cache_dir=tiny_model_dir.parent / "unused-cache"))
    e.load()
    yield e
    e.close()


def _pixels(engine: LocalEngine, frames: int = 12) -> tuple[torch.Tensor, F.FeatureMeta]:
    rng = np.random.default_rng(3)
    part = VideoPart([rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(frames)],
                     [10 * i for i in range(frames)], source_fps=10.0, total_frames=10 * frames)
    return F.video_pixels(engine.processor, part)


def test_the_loaded_model_has_the_one_call_path_and_it_gives_the_same_features(engine: LocalEngine,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    attn = [m for m in engine.model.model.visual.modules() if type(m).__name__ == "Qwen3VLVisionAttention"]
    assert attn and all(hasattr(m, "_vlscope_original_forward") for m in attn)
    pixels, meta = _pixels(engine)
    calls: list[int] = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or real_sdpa(*a, **k))
    ours = F.encode(engine.model, pixels, meta)
    assert len(calls) == len(attn)  # one call per layer for the 6 groups, not 6 per layer
    for m in attn:
        monkeypatch.setattr(m, "forward", m._vlscope_original_forward)
    calls.clear()
    theirs = F.encode(engine.model, pixels, meta)
    assert len(calls) >= 6 * len(attn)  # transformers' path: a call per group per layer
    assert torch.allclose(ours.pooler, theirs.pooler, atol=1e-5, rtol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-5) for a, b in zip(ours.deepstack, theirs.deepstack))


def test_groups_of_several_sizes_keep_the_call_per_group(engine: LocalEngine) -> None:
    from core.vlm.vision_attention import _Blocks

    blocks = _Blocks()
    assert blocks.of(torch.tensor([0, 4, 8, 12]), 12) == 4
    assert blocks.of(torch.tensor([0, 4, 10]), 10) is None  # two sizes: transformers' path

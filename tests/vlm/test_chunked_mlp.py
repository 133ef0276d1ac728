"""The language model's MLP a stretch of tokens at a time over long prompts (core.vlm.chunked_mlp): installed on
the loaded tiny model, the same hidden states and the same greedy answer as the whole-prompt MLP, and the
largest MLP activation bounded by the stretch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.settings import Settings
from core.vlm.local import LocalEngine


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> LocalEngine:
    e = LocalEngine(Settings(model=str(tiny_model_dir), cache_dir=tiny_model_dir.parent / "unused-cache"))
    e.load()
    yield e
    e.close()


def _mlps(engine: LocalEngine) -> list:
    return [layer.mlp for layer in engine.model.model.language_model.layers]


def test_long_inputs_run_in_stretches_with_the_same_result(engine: LocalEngine,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    mlps = _mlps(engine)
    assert mlps and all(hasattr(m, "_vlscope_original_forward") for m in mlps)
    for m in mlps:
        monkeypatch.setattr(m, "_vlscope_chunk", 16)
    widths: list[int] = []
    gate = mlps[0].gate_proj
    handle = gate.register_forward_hook(lambda mod, inp, out: widths.append(int(out.shape[1])))
    ids = torch.randint(0, engine.model.config.text_config.vocab_size, (1, 100))
    lm = engine.model.model.language_model
    with torch.inference_mode():
        ours = lm(input_ids=ids).last_hidden_state
        chunked_widths = list(widths)
        for m in mlps:
            monkeypatch.setattr(m, "_vlscope_chunk", 1 << 30)
        widths.clear()
        theirs = lm(input_ids=ids).last_hidden_state
    handle.remove()
    assert chunked_widths == [16, 16, 16, 16, 16, 16, 4]  # 100 tokens: six stretches of 16 and the rest
    assert widths == [100]
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-4)


def test_short_inputs_and_decode_steps_take_the_module_path(engine: LocalEngine) -> None:
    m = _mlps(engine)[0]
    x = torch.randn(1, 3, m.gate_proj.in_features)
    with torch.inference_mode():
        assert torch.equal(m(x), m._vlscope_original_forward(x))

"""The planner's model size from the `model` setting's name (before anything is loaded)."""

from __future__ import annotations

import pytest

from core.app.video import model_size
from core.media.budget import kv_bytes_per_token


@pytest.mark.parametrize("name, size", [
    ("Qwen/Qwen3-VL-8B-Instruct", "8b"),
    ("Qwen/Qwen3-VL-2B-Thinking", "2b"),
    ("Qwen/Qwen3-VL-30B-A3B-Instruct", "qwen3-vl-30b-a3b"),
    ("Qwen/Qwen3.5-4B", "qwen3.5-4b"),
    ("Qwen/Qwen3.5-9B", "qwen3.5-9b"),
])
def test_a_model_name_gives_its_own_shape(name: str, size: str) -> None:
    assert model_size(name) == (size, True)


def test_qwen3_5_4b_is_not_taken_for_qwen3_vl_4b() -> None:
    """The name regex read "Qwen3.5-4B" as Qwen3-VL-4B: its KV cache estimated 4.5 times too large."""
    size, named = model_size("Qwen/Qwen3.5-4B")
    assert named and kv_bytes_per_token(size, "bf16") * 4.5 == kv_bytes_per_token("4b", "bf16")


def test_an_unknown_name_assumes_the_4b() -> None:
    assert model_size("/srv/models/my-finetune") == ("4b", False)

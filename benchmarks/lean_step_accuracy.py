"""The lean decode step's bf16 error against the float32 model, beside transformers' own bf16 step (needs CUDA).

    python benchmarks/lean_step_accuracy.py

For prompt shapes from 9 to 4,000 tokens (one row and three rows) on the tiny random model: the largest, over 7
forced decode steps, of the mean |logits - float32 logits|, for transformers' bf16 step and for the lean step with
VLScope's Triton kernels and with PyTorch operations. The test
`test_on_cuda_in_bf16_the_triton_kernels_are_as_close_to_float32_as_transformers` bounds the ratio; this prints its
spread. Not a test.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tests.vlm.test_lean_step as lean_tests  # noqa: E402
from core.vlm.tiny import build_tiny_model  # noqa: E402

SHAPES = ([9], [5, 11, 8], [2100], [600], [1200], [4000])


def error(logits: list, ref: list) -> float:
    """The largest, over the steps, of the mean |logits - float32 logits|."""
    return max((a.float() - b).abs().mean().item() for a, b in zip(logits, ref))


def main() -> None:
    from transformers import AutoModelForImageTextToText

    folder = build_tiny_model(Path(tempfile.mkdtemp()) / "tiny")
    load = AutoModelForImageTextToText.from_pretrained
    exact = load(folder, dtype=torch.float32).to("cuda").eval()
    model = load(folder, dtype=torch.bfloat16).to("cuda").eval()
    print("transformers", transformers.__version__, "attn", model.config._attn_implementation)
    for lengths in SHAPES:
        prompts = [lean_tests._ids(n, s).cuda() for s, n in enumerate(lengths)]
        forced = torch.randint(10, 500, (len(prompts), 8), generator=torch.Generator().manual_seed(7)).cuda()
        ref, _ = lean_tests._logits_per_step(exact, "transformers", prompts, 8, forced)
        tf, _ = lean_tests._logits_per_step(model, "transformers", prompts, 8, forced)
        lean = {}
        for kernels in ("triton", "torch"):
            lean_tests.KERNELS = kernels
            got, _ = lean_tests._logits_per_step(model, "lean", prompts, 8, forced)
            lean[kernels] = error(got, ref)
        lean_tests.KERNELS = "auto"
        e_tf = error(tf, ref)
        print(f"lengths {lengths}: transformers bf16 {e_tf:.4f}, lean triton {lean['triton']:.4f} "
              f"({lean['triton'] / e_tf:.2f}x), lean torch {lean['torch']:.4f} ({lean['torch'] / e_tf:.2f}x)")


if __name__ == "__main__":
    main()

"""What a question's few tokens cost in attention after a kept video prefix (issue 14). Not a test.

A follow-up (or the first answer after the prefix was prefilled during the ingest) prefills only its own words,
some 10-40 tokens, attending to the ~50,000 kept positions of a static cache through transformers' masked SDPA:
the keys and values repeated to the query heads, a boolean mask over the whole cache. Each question has a new
length, so a new shape. This times, for a few new lengths, the first and the second call of that attention with
PyTorch's own choice of kernel, with cuDNN's only, and with the memory-efficient kernel only; the repeat of the keys
and values; and VLScope's `core.vlm.suffix_attention.attend_after` (no mask, no repeat, the kept keys in splits,
flash kernels), with its largest difference from the masked call.

    python3 benchmarks/suffix_attention.py   # on a CUDA GPU
"""

from __future__ import annotations

import time

import sys
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.vlm.suffix_attention import attend_after  # noqa: E402

HEADS, HEADS_KV, DIM = 32, 8, 128  # Qwen3-VL-4B
KEPT, CACHE = 49_999, 52_480  # the 10-minute video's prompt; its static cache bucket


def timed(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return round((time.perf_counter() - start) * 1e3, 2)


def main() -> None:
    torch.manual_seed(0)
    k8 = torch.randn(1, HEADS_KV, CACHE, DIM, device="cuda", dtype=torch.bfloat16)
    v8 = torch.randn_like(k8)
    repeat = lambda t: t[:, :, None].expand(1, HEADS_KV, HEADS // HEADS_KV, CACHE, DIM).reshape(1, HEADS, CACHE, DIM)  # noqa: E731
    print("repeat of keys and values to 32 heads (one layer) ms:", timed(lambda: (repeat(k8), repeat(v8))),
          timed(lambda: (repeat(k8), repeat(v8))))
    k, v = repeat(k8), repeat(v8)
    choices = {"default": None, "cudnn": [SDPBackend.CUDNN_ATTENTION], "efficient": [SDPBackend.EFFICIENT_ATTENTION]}
    for n in (13, 21, 29, 34):
        q = torch.randn(1, HEADS, n, DIM, device="cuda", dtype=torch.bfloat16)
        pos = torch.arange(KEPT, KEPT + n, device="cuda")
        mask = (torch.arange(CACHE, device="cuda")[None, :] <= pos[:, None])[None, None]
        row = []
        for name, backends in choices.items():
            def call() -> None:
                if backends is None:
                    torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                else:
                    with sdpa_kernel(backends):
                        torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            try:
                first = timed(call)
                row.append(f"{name} first {first} ms, again {timed(call)} ms")
            except RuntimeError as exc:
                row.append(f"{name}: {type(exc).__name__} {str(exc)[:80]}")
        lean = lambda: attend_after(q, k8, v8, KEPT)  # noqa: E731 - VLScope's: the cache's 8 key heads as they are
        row.append(f"vlscope first {timed(lean)} ms, again {timed(lean)} ms")
        print(f"{n} query tokens:", "; ".join(row), flush=True)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        eff = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    print("largest difference, efficient against default:", (eff.float() - ref.float()).abs().max().item())
    print("largest difference, vlscope against default:", (attend_after(q, k8, v8, KEPT).float() - ref.float()).abs().max().item())


if __name__ == "__main__":
    main()

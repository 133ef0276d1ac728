"""What a new attention shape costs on first use: cuDNN builds a plan per shape and strides (issue 14).

The prefix prefilled during an ingest attends chunk by chunk; each new (queries, keys, strides) is a new plan. This
times the first and the second call of cuDNN's attention for the shapes of the 10-minute video's chunks, with the
past keys read from buffers of two prompt lengths (other strides), and for a few chunk lengths of a part each.

    python3 benchmarks/cudnn_plan_cost.py   # on a CUDA GPU
"""

from __future__ import annotations

import time

import torch

HEADS_KV, GROUPS, DIM, CHUNK = 8, 4, 128, 4096


def timed(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> float:
    """Milliseconds of one cuDNN attention call."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, causal, False, scale=DIM ** -0.5)
    torch.cuda.synchronize()
    return round((time.perf_counter() - start) * 1e3, 1)


def twice(label: str, q: torch.Tensor, k: torch.Tensor, causal: bool) -> None:
    first = timed(q, k, k, causal)
    print(label, "first ms", first, "again ms", timed(q, k, k, causal), flush=True)


def main() -> None:
    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16)

    torch.manual_seed(0)
    q = rand(1, HEADS_KV, GROUPS * CHUNK, DIM)  # a chunk's query heads folded along the sequence
    for total in (53248, 50176):
        buffer = rand(1, HEADS_KV, total, DIM)
        for past in (CHUNK, 2 * CHUNK, 3 * CHUNK, 8 * CHUNK):
            twice(f"buffer {total} past {past}", q, buffer[:, :, :past], False)
    twice("contiguous past 8192", q, rand(1, HEADS_KV, 2 * CHUNK, DIM), False)
    twice("causal own 4096", rand(1, 32, CHUNK, DIM), rand(1, 32, CHUNK, DIM), True)
    for n in (3901, 3917, 3899):
        twice(f"causal own n {n}", rand(1, 32, n, DIM), rand(1, 32, n, DIM), True)


if __name__ == "__main__":
    main()

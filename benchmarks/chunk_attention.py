"""Attention of a prefill done in chunks, at the 4B's shape (32 query heads, 8 KV heads, head size 128), on the GPU.

A prefill in chunks (while a video is still being ingested, or to bound activation memory) has each chunk's queries
attend to every earlier key and causally to its own. Through transformers that is one SDPA call with a mask, which
no fast kernel takes. `core.vlm.chunk_attention` instead makes two maskless calls (the chunk against the keys before
it; the chunk against itself, causal) and merges them by their log-sum-exp. This prints, for one layer and for the
36 layers of the 4B, the one-pass causal time beside the chunked paths, and the largest difference to one pass.

    python3 benchmarks/chunk_attention.py [--tokens 49886] [--chunk 3960]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from core.vlm.chunk_attention import attend_chunk

    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=49886)
    ap.add_argument("--chunk", type=int, default=3960)
    ap.add_argument("--layers", type=int, default=36)
    args = ap.parse_args()
    dev = "cuda"
    torch.manual_seed(0)
    n, c = args.tokens, args.chunk
    q = torch.randn(1, 32, n, 128, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, 8, n, 128, device=dev, dtype=torch.bfloat16)
    v = torch.randn(1, 8, n, 128, device=dev, dtype=torch.bfloat16)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; {n} tokens, chunks of {c}", flush=True)

    def timed(fn, reps: int = 3) -> float:
        fn()
        torch.cuda.synchronize()
        best = 1e9
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        return best

    kx, vx = k.repeat_interleave(4, 1), v.repeat_interleave(4, 1)
    rows = []
    ref = None
    for name, backend in (("cuDNN", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
        def one(backend=backend):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, kx, vx, is_causal=True)
        try:
            s = timed(one)
            out = one()
            ref = out if ref is None else ref
            rows.append((f"one pass, causal ({name})", s, 0.0))
        except RuntimeError as exc:
            rows.append((f"one pass, causal ({name}): {exc}".splitlines()[0], float("nan"), float("nan")))

    def chunked_mask() -> torch.Tensor:
        outs = []
        for s0 in range(0, n, c):
            e = min(n, s0 + c)
            mask = torch.ones(e - s0, e, dtype=torch.bool, device=dev).tril(diagonal=s0)
            outs.append(F.scaled_dot_product_attention(q[:, :, s0:e], kx[:, :, :e], vx[:, :, :e], attn_mask=mask))
        return torch.cat(outs, 2)

    def chunked_merge() -> torch.Tensor:
        return torch.cat([attend_chunk(q[:, :, s0:min(n, s0 + c)], k[:, :, :min(n, s0 + c)],
                                       v[:, :, :min(n, s0 + c)]) for s0 in range(0, n, c)], 2)

    for label, fn in (("chunks, one SDPA call with a mask (transformers)", chunked_mask),
                      ("chunks, two maskless calls merged (VLScope)", chunked_merge)):
        try:
            s = timed(fn)
            diff = float((fn().float() - ref.float()).abs().max()) if ref is not None else float("nan")
            rows.append((label, s, diff))
        except RuntimeError as exc:
            rows.append((f"{label}: {exc}".splitlines()[0], float("nan"), float("nan")))
    flops = 4 * 32 * 128 * n * n / 2
    print(f"{'path':58s} {'one layer s':>12s} {'x36 layers s':>13s} {'TFLOP/s':>8s} {'max diff':>9s}")
    for label, s, diff in rows:
        print(f"{label:58s} {s:12.4f} {s * args.layers:13.3f} {flops / s / 1e12:8.0f} {diff:9.4f}")


if __name__ == "__main__":
    main()

"""What a new attention shape costs on first use: cuDNN builds a plan per shape and strides (issue 14).

    python3 benchmarks/cudnn_plan_cost.py   # on a CUDA GPU
"""
import time, torch
dev = "cuda"
def sdpa(q, k, v, causal):
    torch.cuda.synchronize(); t = time.perf_counter()
    torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, causal, False, scale=0.088)
    torch.cuda.synchronize(); return time.perf_counter() - t
H, G, D, C = 8, 4, 128, 4096
torch.manual_seed(0)
res = []
for total in (53248, 50176):
    buf = torch.randn(1, H, total, D, device=dev, dtype=torch.bfloat16)
    q = torch.randn(1, H, G * C, D, device=dev, dtype=torch.bfloat16)
    for past in (C, 2 * C, 3 * C, 8 * C):
        k = buf[:, :, :past]
        first = sdpa(q, k, k, False)
        again = sdpa(q, k, k, False)
        res.append((total, past, round(first * 1e3, 1), round(again * 1e3, 1)))
        print("buffer", total, "past", past, "first ms", round(first * 1e3, 1), "again ms", round(again * 1e3, 1), flush=True)
# contiguous copy of same shape as a strided one seen before
k = torch.randn(1, H, 2 * C, D, device=dev, dtype=torch.bfloat16)
print("contiguous past 8192 first", round(sdpa(q, k, k, False) * 1e3, 1), "again", round(sdpa(q, k, k, False) * 1e3, 1))
qc = torch.randn(1, 32, C, D, device=dev, dtype=torch.bfloat16)
kc = torch.randn(1, 32, C, D, device=dev, dtype=torch.bfloat16)
print("causal own first", round(sdpa(qc, kc, kc, True) * 1e3, 1), "again", round(sdpa(qc, kc, kc, True) * 1e3, 1))
for n in (3901, 3917, 3899):
    qn = torch.randn(1, 32, n, D, device=dev, dtype=torch.bfloat16); kn = torch.randn(1, 32, n, D, device=dev, dtype=torch.bfloat16)
    print("causal own n", n, "first", round(sdpa(qn, kn, kn, True) * 1e3, 1), "again", round(sdpa(qn, kn, kn, True) * 1e3, 1))

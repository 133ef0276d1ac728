"""The two big GPU steps of a fresh 10-minute video at the default plan (issue 14), path against path, in one process:

  1. the vision tower over the plan's 384 frame groups (768 frames of 480x256): transformers' attention call per
     group against VLScope's one call per layer (core.vlm.vision_attention);
  2. the language model's prefill of the 46,080 visual tokens from features, with each SDPA backend PyTorch has
     (its own choice, flash, cuDNN, memory-efficient), in one pass and in chunks of 8,192 and 3,840 tokens (chunks
     after the first attend through core.vlm.chunk_attention whatever the backend).
Random weights of the exact 4B shape (bf16) and random features: the figures time the machinery. Not a test.

    python benchmarks/prefill_paths.py --folder /tmp/m4b
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
GIB = 1024**3


def cuda_time(torch: Any, fn: Any, repeat: int = 2) -> tuple[float, float]:
    """(best seconds, peak GiB above the start) of `fn` over `repeat` runs after one warm-up."""
    fn()
    torch.cuda.synchronize()
    best, peak = 1e9, 0.0
    for _ in range(repeat):
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
        peak = max(peak, (torch.cuda.max_memory_allocated() - base) / GIB)
        del out
    return best, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", default="/tmp/m4b")
    ap.add_argument("--size", default="4b")
    ap.add_argument("--quick", action="store_true", help="PyTorch's choice only; chunks of 8,192 and of one part")
    ap.add_argument("--skip-vision", action="store_true", help="no vision-tower rows")
    args = ap.parse_args()
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from benchmarks.engine import random_model_folder
    from core.cache import ResultCache
    from core.settings import Settings
    from core.vlm import features as F
    from core.vlm.local import LocalEngine

    random_model_folder(args.folder, args.size)
    engine = LocalEngine(Settings(model=args.folder), feature_store=ResultCache(tempfile.mkdtemp()))
    engine.load()
    model, processor = engine.model, engine.processor
    dev = model.device
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; weights "
          f"{torch.cuda.memory_allocated() / GIB:.1f} GiB", flush=True)

    # 1. the vision tower
    groups, gh, gw = 384, 16, 30
    vp = processor.video_processor
    dim = 3 * vp.temporal_patch_size * vp.patch_size ** 2
    meta = F.FeatureMeta(grid=[groups, gh, gw], frame_indices=[round(i * 23.4) for i in range(2 * groups)],
                         source_fps=30.0, total_frames=18000, resized=[gh * 16, gw * 16], frame_hw=[gh * 16, gw * 16],
                         patch=16, merge=2, temporal_patch=2)
    pixels = torch.randn(groups * gh * gw, dim)
    attn = [m for m in model.model.visual.modules() if hasattr(m, "_vlscope_original_forward")]
    ours = {m: m.forward for m in attn}
    rows = []
    for name, swap in (() if args.skip_vision else (("transformers: a call per frame group", True),
                                                   ("VLScope: one call per layer", False))):
        for m in attn:
            m.forward = m._vlscope_original_forward if swap else ours[m]
        s, peak = cuda_time(torch, lambda: F.encode(model, pixels, meta), repeat=1)
        rows.append(("vision tower, 768 frames (384 groups, 32 a call)", name, s, peak))
        print(rows[-1], flush=True)
    features = F.encode(model, pixels, meta)

    # 2. the prefill from features
    text = f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>" \
           f"{processor.video_token}<|vision_end|>"
    inputs = F.prompt_inputs(processor, text, features.meta, dev)
    n = int(inputs["input_ids"].shape[1])
    backends = [("PyTorch's choice", None), ("flash", SDPBackend.FLASH_ATTENTION),
                ("cuDNN", SDPBackend.CUDNN_ATTENTION), ("memory-efficient", SDPBackend.EFFICIENT_ATTENTION)]
    if args.quick:
        backends = backends[:1]
    for chunk in (0, 8192, 3840):  # 3,840: one stored part (32 frame groups), as an ingest prefills
        for name, backend in backends:
            ctx = sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext()
            try:
                with ctx:
                    s, peak = cuda_time(torch, lambda: F.prefill(model, inputs, features, chunk), repeat=1)
            except Exception as exc:  # noqa: BLE001 - a backend that cannot run this shape is a finding
                rows.append((f"prefill {n} tokens, " + ("one pass" if not chunk else f"chunks of {chunk}"), name,
                             float("nan"), float("nan")))
                print(name, "failed:", type(exc).__name__, str(exc)[:200], flush=True)
                continue
            rows.append((f"prefill {n} tokens, " + ("one pass" if not chunk else f"chunks of {chunk}"), name, s, peak))
            print(rows[-1], flush=True)
    print()
    print(f"{'step':52s} {'path':40s} {'seconds':>8s} {'peak GiB':>9s}")
    for what, name, s, peak in rows:
        print(f"{what:52s} {name:40s} {s:8.3f} {peak:9.2f}")
    engine.close()


if __name__ == "__main__":
    main()

"""Precisions side by side on the real Qwen3-VL-4B shape with random weights (no download).

For bf16, fp16, bitsandbytes 8-bit and 4-bit (nf4, vision tower unquantised) and an FP8 block-128
checkpoint (made here from the same random weights with transformers' FineGrainedFP8Config, saved,
then loaded as a pre-quantised checkpoint the way the official -FP8 models load), prints: weights
memory, peak memory for a 600-frame video, prefill time of that video, and decode tokens/s at batch 1
(fast path where it applies). Needs a CUDA GPU; 8-bit/4-bit need bitsandbytes.

    python benchmarks/precisions.py --folder /tmp/m4b      # reuses a model saved by benchmarks/engine.py
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", default="/tmp/m4b", help="random 4B model folder (built if missing)")
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    import warnings

    import torch

    warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")  # printed at every 8-bit matmul otherwise
    if not torch.cuda.is_available():
        print("This benchmark needs a CUDA GPU.")
        return 2
    from benchmarks.engine import random_model_folder
    from core.settings import Settings
    from core.vlm import GenerationParams, VideoPart, user
    from core.vlm.local import LocalEngine

    folder = random_model_folder(args.folder)
    fp8_folder = folder.parent / (folder.name + "-fp8")
    rows = []
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(args.frames)]
    video = VideoPart(frames, [15 * i for i in range(args.frames)], source_fps=30.0, total_frames=15 * args.frames)
    one = GenerationParams(max_new_tokens=1, temperature=0.0, presence_penalty=0.0)
    greedy = GenerationParams(max_new_tokens=args.decode_tokens, temperature=0.0, presence_penalty=0.0)
    text = [user("Write a long story about a door, a car and a kitchen.")]

    def make_fp8() -> str | None:
        if (fp8_folder / "config.json").exists():
            return None
        try:
            from transformers import AutoModelForImageTextToText, AutoProcessor, FineGrainedFP8Config

            model = AutoModelForImageTextToText.from_pretrained(
                str(folder), dtype=torch.bfloat16, device_map="cuda:0",
                quantization_config=FineGrainedFP8Config(modules_to_not_convert=["model.visual", "lm_head"]))
            model.save_pretrained(fp8_folder)
            AutoProcessor.from_pretrained(str(folder)).save_pretrained(fp8_folder)
            del model
            gc.collect()
            torch.cuda.empty_cache()
            return None
        except Exception as exc:  # noqa: BLE001
            return f"{type(exc).__name__}: {exc}"

    cases = [("bf16", dict(dtype="bf16")), ("fp16", dict(dtype="fp16")),
             ("8-bit (bnb)", dict(dtype="bf16", quantization="8bit")),
             ("4-bit nf4 (bnb)", dict(dtype="bf16", quantization="4bit")),
             ("fp8 block-128 checkpoint", dict(dtype="bf16"))]
    print(f"# precisions: Qwen3-VL-4B shape, random weights, {torch.cuda.get_device_name(0)}, "
          f"{args.frames}-frame 640x360 video, decode {args.decode_tokens} tokens")
    print("| precision | weights memory | peak, 600-frame video | video prefill | decode tokens/s (path) |")
    print("| --- | --- | --- | --- | --- |")
    for name, kw in cases:
        path = folder
        if name.startswith("fp8"):
            problem = make_fp8()
            if problem:
                print(f"| {name} | not measured: {problem[:120]} | | | |")
                continue
            path = fp8_folder
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        engine = LocalEngine(Settings(model=str(path), device="cuda", cache_dir=folder / "cache", prefix_cache_gb=0,
                                      **kw))
        try:
            t = time.perf_counter()
            engine.load()
            load_s = time.perf_counter() - t
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"| {name} | not measured: {str(exc)[:160]} | | | |")
            continue
        engine.model.generation_config.eos_token_id = None
        if name.startswith("fp8"):
            print(f"# {name}: loaded as {engine.info().quantization}")
        weights = torch.cuda.memory_allocated() - base
        try:
            engine.generate([user(video, "What happens?")], one)
            vid = engine.generate([user(video, "What happens?")], one)
            engine.generate(text, GenerationParams(max_new_tokens=16, temperature=0.0, presence_penalty=0.0))
            dec = engine.generate(text, greedy)
            row = {"precision": name, "load_s": load_s, "weights_bytes": weights,
                   "video_peak_bytes": vid.metrics.peak_gpu_memory_bytes, "video_prefill_ms": vid.metrics.prefill_ms,
                   "decode_tokens_per_s": dec.metrics.decode_tokens_per_s, "decode_path": dec.metrics.decode_path}
            rows.append(row)
            print(f"| {name} | {weights / 1024**3:.2f} GiB | {vid.metrics.peak_gpu_memory_bytes / 1024**3:.2f} GiB | "
                  f"{vid.metrics.prefill_ms:.0f} ms | {dec.metrics.decode_tokens_per_s:.1f} ({dec.metrics.decode_path}) |")
        except Exception as exc:  # noqa: BLE001
            print(f"| {name} | {weights / 1024**3:.2f} GiB | failed: {str(exc)[:160]} | | |")
        engine.close()
        del engine
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

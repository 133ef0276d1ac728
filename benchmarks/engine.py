"""Engine speed and memory on the real Qwen3-VL / Qwen3.5 architectures with random weights (no download).

Builds the exact shape of a released model (default Qwen3-VL-4B; `--shape` any of core.vlm.shapes.SHAPES, e.g.
qwen3.5-4b, qwen3.5-9b, qwen3-vl-30b-a3b, or tiny-<architecture> for a tiny random model of that architecture),
saves it, loads it back through the users' path (LocalEngine), and prints:
  - load time from a local folder;
  - decode tokens/s at batch 1 over 256 tokens, against the memory-bound limit measured in the same
    process (weight bytes one token reads / device copy bandwidth; a mixture of experts reads only its
    top-k experts);
  - decode tokens/s at batch 4;
  - prefill time, visual tokens and peak GPU memory for one 1080p image and for a 600-frame video
    at the processor's default budget, and a follow-up question on that video with its kept prefix.
Random weights mean random text; the figures measure the machinery. Qwen3.5 (Gated DeltaNet hybrid) decodes
with plain `generate` in VLScope (the fast decoder's static cache and lean step hold per-token K/V only), so its
decode paths are "plain" alone. Its linear-attention layers run transformers' PyTorch fallback unless the
`flash-linear-attention` (fla-core) and `causal-conv1d` packages are installed: say which in the figures.
Where the shapes came from: core.vlm.shapes.SHAPES[...].source (printed). Needs a CUDA GPU; `--device cpu
--shape tiny-qwen3_5` runs the same code on the CPU (checks the script, measures nothing useful).

    python benchmarks/engine.py --size 4b [--json out.json]
    python benchmarks/engine.py --shape qwen3.5-9b --json qwen35-9b.json
    python benchmarks/engine.py --device cpu --shape tiny-qwen3_5 --frames 8 --decode-tokens 16
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def gib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 1024**3:.2f} GiB"


def copy_bandwidth_bytes_per_s(torch, device: str = "cuda") -> float:
    """Device-to-device copy bandwidth (bytes read + written per second), the decode roofline's denominator."""
    if device == "cpu":
        x = torch.empty(256 * 1024**2, dtype=torch.uint8)
        y = torch.empty_like(x)
        y.copy_(x)
        t = time.perf_counter()
        for _ in range(5):
            y.copy_(x)
        return 2 * 256 * 1024**2 * 5 / (time.perf_counter() - t)
    x = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    n = 10
    for _ in range(n):
        y.copy_(x)
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000
    del x, y
    torch.cuda.empty_cache()
    return 2 * 2 * 1024**3 * n / seconds


SHAPE_CHOICES = ["2b", "4b", "8b"]  # completed from core.vlm.shapes in main(): every released shape and tiny-<arch>


def build_random_model(size: str, folder: Path, device: str = "cuda") -> float:
    """Random weights of the exact shape `size` ("2b"/"4b"/"8b": Qwen3-VL; a core.vlm.shapes.SHAPES key such as
    "qwen3.5-9b"; or "tiny-<architecture>") + a processor with the hub's defaults, saved to `folder`."""
    import torch
    from transformers import AutoModelForImageTextToText, Qwen3VLConfig

    from core.vlm import shapes
    from core.vlm.tiny import build_processor, build_tiny_model, special_token_ids

    t = time.perf_counter()
    if size.startswith("tiny-"):
        build_tiny_model(folder, arch=size.removeprefix("tiny-"))
        return time.perf_counter() - t
    processor = build_processor()
    ids = special_token_ids(processor.tokenizer)
    token_ids = {"image": ids["<|image_pad|>"], "video": ids["<|video_pad|>"], "vision_start": ids["<|vision_start|>"],
                 "vision_end": ids["<|vision_end|>"], "eos": ids["<|im_end|>"], "pad": ids["<|endoftext|>"]}
    if size in shapes.SIZES:  # the original table, as every Qwen3-VL figure so far was measured
        config = Qwen3VLConfig(**shapes.qwen3_vl_config_dict(size, token_ids=token_ids))
    else:
        config = shapes.build_config(size, token_ids=token_ids)  # the released vocabulary size, the tiny tokenizer
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16 if device != "cpu" else torch.float32)
    model.generation_config.eos_token_id = None  # random weights: never stop early, decode the full length
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    del model
    if device != "cpu":
        torch.cuda.empty_cache()
    return time.perf_counter() - t


def random_model_folder(folder: str | Path, size: str = "4b") -> Path:
    """`folder` holding a random model of the exact shape, built there first if it is not (for the other benchmarks)."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        build_random_model(size, folder)
    return folder


def shape_facts(size: str, config) -> dict[str, object]:
    """What the shape is and where its numbers came from, and the bytes one decoded token reads (bf16)."""
    from core.vlm import shapes
    from core.vlm.arch import architecture_of

    key = shapes.shape_key(size)
    count = shapes.count_params(config)
    return {"shape": key or size, "source": shapes.SHAPES[key].source if key else "core.vlm.tiny (random tiny model)",
            "architecture": architecture_of(config).describe(), "params": count.total, "active_params": count.active,
            "kv_bytes_per_token_bf16": shapes.kv_bytes_per_token_of(config, 2),
            "state_bytes_bf16": shapes.state_bytes_of(config, 2)}


def make_decoder(model, path: str, **kwargs):
    """A fast decoder with the step `path` names: "transformers" (transformers' forward), "lean" (the lean step
    with VLScope's Triton kernels, as shipped), "lean-attention" (only the Triton attention: the step as shipped
    until 2026-11-29) or "lean-torch" (the lean step in PyTorch operations, as on a machine without Triton)."""
    from core.vlm.fastdecode import FastDecoder

    fd = FastDecoder(model, step=path.split("-")[0], kernels="torch" if path == "lean-torch" else "auto", **kwargs)
    if path == "lean-attention":
        lean = fd._lean
        lean.prepare = [False] * len(lean.prepare)
        lean.gated = [False] * len(lean.gated)
        lean.triton_norm = False
    return fd


def profile_steps(engine, torch, paths: list[str]) -> None:
    """Kernels and GPU time of one eager decode step per step kind (what the CUDA graph replays), short and long prompt."""
    from torch.profiler import ProfilerActivity, profile

    for length in (40, 12500):
        ids = torch.randint(1000, 2000, (1, length), device="cuda")
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        for path in [p for p in paths if p != "plain"]:
            fd = make_decoder(engine.model, path, use_cuda_graph=False)
            fd.generate(inputs, 4, lambda lg, g: lg.argmax(-1), set(), greedy=True)
            tok, pos, rope = fd._buffers
            with torch.inference_mode():
                for _ in range(2):
                    fd._step_eager(tok, pos, rope)
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(3):
                        fd._step_eager(tok, pos, rope)
                    torch.cuda.synchronize()
            rows = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
            kernels = sum(e.count for e in rows) / 3
            busy = sum(e.self_device_time_total for e in rows) / 3 / 1000
            top = sorted(rows, key=lambda e: -e.self_device_time_total)[:6]
            print(f"profile, {length}-token prompt, {path} step: {kernels:.0f} kernels per token, GPU busy "
                  f"{busy:.2f} ms per token; top: " + "; ".join(
                      f"{e.key[:60]} x{e.count // 3} {e.self_device_time_total / 3000:.2f} ms" for e in top))
            for e in sorted(rows, key=lambda e: -e.self_device_time_total)[6:30]:  # the rest: what fusing could remove
                print(f"    {e.key[:90]} x{e.count // 3} {e.self_device_time_total / 3000 * 1000:.0f} us")
            del fd
        torch.cuda.empty_cache()


def cpu_smoke(args: argparse.Namespace) -> int:
    """Run the same requests on the CPU with the tiny model (checks the script, measures nothing useful)."""
    from core.settings import Settings
    from core.vlm import GenerationParams, ImagePart, VideoPart, user
    from core.vlm.local import LocalEngine
    from core.vlm.tiny import build_tiny_model

    folder = build_tiny_model(tempfile.mkdtemp(prefix="vlscope-smoke-"))
    engine = LocalEngine(Settings(model=str(folder), device="cpu", cache_dir=folder / "cache"))
    engine.load()
    engine.model.generation_config.eos_token_id = None
    r = engine.generate([user("story")], GenerationParams(max_new_tokens=32, temperature=0.0, presence_penalty=0.0))
    print("decode", r.completion_tokens, r.metrics.decode_tokens_per_s)
    rng = np.random.default_rng(0)
    one = GenerationParams(max_new_tokens=1, temperature=0.0, presence_penalty=0.0)
    img = engine.generate([user(ImagePart(rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)), "x")], one)
    print("image", img.metrics.visual_tokens, img.metrics.prefill_ms)
    frames = [rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(args.frames)]
    part = VideoPart(frames, [15 * i for i in range(args.frames)], source_fps=30.0, total_frames=15 * args.frames)
    vid = engine.generate([user(part, "x")], one)
    print("video", vid.metrics.visual_tokens, vid.prompt_tokens, vid.metrics.preprocess_ms)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from core.vlm.shapes import SHAPES
    from core.vlm.tiny import ARCHITECTURES

    choices = SHAPE_CHOICES + list(SHAPES) + [f"tiny-{a}" for a in ARCHITECTURES]
    parser.add_argument("--size", default="4b", choices=choices, help="Qwen3-VL 2b/4b/8b (as before), or a shape")
    parser.add_argument("--shape", "--arch", dest="shape", choices=choices,
                        help="the shape to build (overrides --size): a released one (qwen3.5-4b, qwen3.5-9b, "
                             "qwen3-vl-30b-a3b, ...) or tiny-<architecture> (qwen3_vl, qwen3_vl_moe, qwen3_5, qwen3_5_moe)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: the same measurements on the CPU (with a tiny shape, to check the script)")
    parser.add_argument("--decode-tokens", type=int, default=256)
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--folder", help="where to save the random model (default: a temporary folder)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--paths", default="plain,transformers,lean-torch,lean-attention,lean",
                        help="decoding paths compared (plain first: the others' ratios are against it)")
    parser.add_argument("--video-sizes", default="640x360,1280x720", help="frame sizes of the 600-frame video")
    parser.add_argument("--parts", default="decode,media,concurrency,precisions",
                        help="comma-separated parts to run (default: all, in one run)")
    parser.add_argument("--cpu-smoke", action="store_true", help="check the script on the CPU with the tiny model")
    args = parser.parse_args()
    if args.cpu_smoke:
        return cpu_smoke(args)
    args.size = args.shape or args.size

    import torch
    import transformers

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("This benchmark needs a CUDA GPU (it measures GPU speed and memory); --device cpu checks it on the CPU.")
        return 2
    cuda = device == "cuda"
    from core.settings import Settings
    from core.vlm import GenerationParams, user
    from core.vlm.local import LocalEngine

    import importlib.util

    from transformers import AutoConfig

    out: dict[str, object] = {
        "gpu": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
        "transformers": transformers.__version__, "size": args.size,
        # Qwen3.5's Gated DeltaNet layers: optimised kernels when these are installed, else PyTorch's reference code
        "flash_linear_attention": importlib.util.find_spec("fla") is not None,
        "causal_conv1d": importlib.util.find_spec("causal_conv1d") is not None,
    }
    name = f"Qwen3-VL-{args.size.upper()}" if args.size in SHAPE_CHOICES else args.size
    print(f"# engine benchmark: {name} shape, random {'bf16' if cuda else 'fp32'} weights, {out['gpu']}, "
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    bandwidth = copy_bandwidth_bytes_per_s(torch, device)
    out["copy_bandwidth_TBps"] = bandwidth / 1e12
    print(f"device copy bandwidth (baseline): {bandwidth / 1e12:.2f} TB/s")

    folder = Path(args.folder or tempfile.mkdtemp(prefix="vlscope-bench-"))
    build_s = build_random_model(args.size, folder, device)
    weights = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    print(f"built and saved random weights in {build_s:.1f} s ({weights / 1e9:.2f} GB of safetensors)")
    facts = shape_facts(args.size, AutoConfig.from_pretrained(folder))
    out.update(facts)
    def count(n: object) -> str:
        return f"{n / 1e9:.3f} B" if n >= 1e8 else f"{n / 1e6:.3f} M"  # type: ignore[operator]

    print(f"shape {facts['shape']}: {facts['architecture']}; {count(facts['params'])} parameters, "
          f"{count(facts['active_params'])} read per token; KV {facts['kv_bytes_per_token_bf16'] / 1024:.1f} KiB "
          f"per token + {facts['state_bytes_bf16'] / 1024**2:.2f} MiB fixed state (bf16). Source: {facts['source']}")
    if facts["state_bytes_bf16"]:
        fla = "installed" if out["flash_linear_attention"] else "NOT installed (PyTorch reference code)"
        conv = "installed" if out["causal_conv1d"] else "NOT installed (PyTorch reference code)"
        print(f"Gated DeltaNet kernels: flash-linear-attention {fla}, causal-conv1d {conv}")

    engine = LocalEngine(Settings(model=str(folder), device=device, dtype="bf16" if cuda else "fp32",
                                  cache_dir=folder / "cache", fast_decode="off"))
    t = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - t
    out["load_s"] = load_s
    info = engine.info()
    print(f"load through LocalEngine: {load_s:.1f} s ({info.dtype}, {info.attn_implementation}; files in page cache)")
    engine.model.generation_config.eos_token_id = None
    unsupported = engine.runner.fast_unsupported
    if unsupported:  # e.g. Qwen3.5: the engine decodes with generate, the fast decoder's paths do not apply
        print(f"decoding: plain generate only ({unsupported})")
        args.paths = "plain"
        out["fast_decoder"] = f"not used: {unsupported}"
    best = "plain" if unsupported else "lean"

    # -- decode at batch 1: plain generate vs the fast path (transformers' step, then the lean step) ----
    prompt = [user("Write a long, detailed story about a door that opens and closes, a car, and a kitchen.")]
    greedy = GenerationParams(max_new_tokens=args.decode_tokens, temperature=0.0, presence_penalty=0.0)
    warm = GenerationParams(max_new_tokens=16, temperature=0.0, presence_penalty=0.0)
    # each decoded token reads every language-model weight once (a mixture of experts: its top-k experts only)
    read = facts["active_params"] * next(engine.model.parameters()).element_size()
    limit = bandwidth / read
    out["decode_limit_tokens_per_s"] = limit
    out["decode_bytes_per_token"] = read

    def use(path: str, compile_step: bool = False) -> None:
        """Point the engine at the plain path or a fast decoder (`make_decoder`)."""
        engine.settings.fast_decode = "off" if path == "plain" else "on"
        engine._fast = None  # the previous decoder (its caches and graphs) goes before the next is built
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        if path == "plain":
            return
        engine._fast = make_decoder(engine.model, path, compile_step=compile_step)

    parts = set(args.parts.split(","))
    texts = {}
    paths = tuple(args.paths.split(",")) if "decode" in parts else ()
    for path in paths:
        use(path)
        engine.generate(prompt, warm)  # warm-up (and graph capture on the fast path)
        runs = [engine.generate(prompt, greedy) for _ in range(1 if path == "plain" else 2)]  # plain: 20 s a run
        tps = [r.metrics.decode_tokens_per_s or 0.0 for r in runs]
        texts[path] = runs[-1].text
        out[f"decode_b1_{path}_tokens_per_s"] = tps
        print(f"decode batch 1, {runs[0].completion_tokens} tokens, {NAMES[path]} ({runs[-1].metrics.decode_path}): "
              + ", ".join(f"{x:.1f}" for x in tps) + f" tokens/s; {max(tps) / limit:.2f} of the {limit:.0f} tokens/s "
              f"limit; ttft {runs[-1].metrics.ttft_ms:.0f} ms")
    for path in paths[1:]:
        same = texts[path] == texts["plain"]
        out[f"{path}_equals_plain_greedy"] = same
        ratio = max(out[f"decode_b1_{path}_tokens_per_s"]) / max(out["decode_b1_plain_tokens_per_s"])
        print(f"{NAMES[path]}: {ratio:.1f}x plain at batch 1; greedy text equals plain: {same}")
    if os.environ.get("VLSCOPE_BENCH_PROFILE") == "1" and paths:
        use("plain")
        profile_steps(engine, torch, list(paths))

    # -- batch 4 through the decoders directly (4 equal-length prompts) -------------------------
    tok = engine.processor.tokenizer
    ids = tok(["A story about a door, a car and a kitchen."] * 4, return_tensors="pt")["input_ids"].to(device)
    batch_inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    n = args.decode_tokens
    for path in paths:
        times = []
        use(path)
        for _ in range(2 if path == "plain" else 3):  # the first run warms up (graph capture)
            sync(torch, device)
            t = time.perf_counter()
            if engine._fast is None:
                with torch.inference_mode():
                    engine.model.generate(**batch_inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
            else:
                engine._fast.generate(batch_inputs, n, lambda lg, g: lg.argmax(-1), set(), greedy=True)
            sync(torch, device)
            times.append(time.perf_counter() - t)
        tps = 4 * n / min(times[1:])
        out[f"decode_b4_{path}_tokens_per_s"] = tps
        print(f"decode batch 4, {n} tokens each, {NAMES[path]}: {tps:.0f} tokens/s in all "
              f"({tps / max(out[f'decode_b1_{path}_tokens_per_s']):.2f}x its batch-1 speed)")

    use(best)
    kept = media_section(engine, args, out, weights, limit, use, torch) if "media" in parts else None
    if os.environ.get("VLSCOPE_BENCH_COMPILE") == "1" and not unsupported:
        compile_section(engine, prompt, kept, greedy, out, limit, use)
    engine.close()  # frees the weights before the next parts, each in its own process (clean memory figures)
    del kept
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    for name in ("concurrency", "precisions"):
        if name in parts and (not cuda or facts["architecture"].split(":")[0] != "Qwen3-VL"):
            print(f"{name}: skipped (written for Qwen3-VL dense on CUDA; this is {facts['architecture']} on {device})")
        elif name in parts:
            print(flush=True)
            subprocess.run([sys.executable, "-u", str(Path(__file__).with_name(f"{name}.py")), "--folder", str(folder)],
                           check=False)
    if not args.folder:
        for f in folder.iterdir():
            if f.is_file():
                f.unlink()
    return 0


def sync(torch, device: str) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device != "cpu":
        torch.cuda.synchronize()


NAMES = {"plain": "plain generate", "transformers": "fast, transformers' step",
         "lean-torch": "fast, lean step, PyTorch kernels", "lean-attention": "fast, lean step, Triton attention only",
         "lean": "fast, lean step, Triton kernels"}


def compile_section(engine, prompt, kept, greedy, out, limit, use) -> None:
    """The lean step compiled by torch.compile (VLSCOPE_COMPILE_DECODE): text prompt, then the video prompt."""
    from core.vlm import user

    asks = [("text", prompt)]
    if kept is not None:
        asks.append(("video", [user(kept, "Describe everything in detail.")]))
    use("lean", compile_step=True)
    for name, ask in asks:
        t = time.perf_counter()
        try:
            engine.generate(ask, greedy)  # compiles (and captures) on the first call of a new shape
        except Exception as exc:  # noqa: BLE001
            print(f"lean step + torch.compile failed: {type(exc).__name__}: {str(exc)[:300]}")
            return
        first_s = time.perf_counter() - t
        runs = [engine.generate(ask, greedy) for _ in range(2)]
        tps = [r.metrics.decode_tokens_per_s or 0.0 for r in runs]
        out[f"decode_b1_{name}_lean_compiled_tokens_per_s"] = tps
        out[f"compile_{name}_first_call_s"] = first_s
        print(f"decode batch 1 after the {name} prompt ({runs[-1].prompt_tokens} tokens), lean step + torch.compile "
              f"({runs[-1].metrics.decode_path}; first call {first_s:.0f} s): " + ", ".join(f"{x:.1f}" for x in tps)
              + f" tokens/s; {max(tps) / limit:.2f} of the limit; fallback: {engine._fast.compile_fallback}")


def media_section(engine, args, out, weights, limit, use, torch):
    """Prefill, memory and follow-ups for a 1080p image and a 600-frame video; decode after the video prompt.

    Returns the 640x360 video (with its kept cache) for the compiled-step measurement."""
    from core.vlm import GenerationParams, ImagePart, VideoPart, user

    greedy = GenerationParams(max_new_tokens=args.decode_tokens, temperature=0.0, presence_penalty=0.0)
    kept = None
    # -- one 1080p image --------------------------------------------------------------------
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    one = GenerationParams(max_new_tokens=1, temperature=0.0, presence_penalty=0.0)
    engine.generate([user(ImagePart(image), "Describe this image.")], one)  # warm-up
    img = engine.generate([user(ImagePart(image), "Describe this image.")], one)
    out["image_1080p"] = {"visual_tokens": img.metrics.visual_tokens, "preprocess_ms": img.metrics.preprocess_ms,
                          "prefill_ms": img.metrics.prefill_ms, "peak_bytes": img.metrics.peak_gpu_memory_bytes}
    print(f"1080p image: {img.metrics.visual_tokens} visual tokens, preprocess {img.metrics.preprocess_ms:.0f} ms, "
          f"prefill {img.metrics.prefill_ms:.0f} ms, peak GPU memory {gib(img.metrics.peak_gpu_memory_bytes)} "
          f"(weights {gib(weights)})")

    # -- a 600-frame video at the default budget ----------------------------------------------
    for w, h in (tuple(int(v) for v in size.split("x")) for size in args.video_sizes.split(",")):
        frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(args.frames)]
        # 600 frames sampled at 2 fps from a 30 fps source: a 5-minute video
        part = VideoPart(frames, [15 * i for i in range(args.frames)], source_fps=30.0, total_frames=15 * args.frames)
        q = [user(part, "What happens in this video?")]
        engine.generate(q, one)  # warm-up
        vid = engine.generate(q, one)
        key = f"video_{args.frames}f_{w}x{h}"
        out[key] = {"visual_tokens": vid.metrics.visual_tokens, "prompt_tokens": vid.prompt_tokens,
                    "preprocess_ms": vid.metrics.preprocess_ms, "prefill_ms": vid.metrics.prefill_ms,
                    "peak_bytes": vid.metrics.peak_gpu_memory_bytes}
        print(f"{args.frames}-frame video {w}x{h}: {vid.metrics.visual_tokens} visual tokens "
              f"({vid.prompt_tokens} prompt tokens), preprocess {vid.metrics.preprocess_ms:.0f} ms, "
              f"prefill {vid.metrics.prefill_ms:.0f} ms, peak GPU memory {gib(vid.metrics.peak_gpu_memory_bytes)}")
        if (h, w) == (360, 640):
            # follow-up questions on the same video: prefix KV reuse vs full recompute
            kept = VideoPart(frames, part.frame_indices, source_fps=30.0, total_frames=15 * args.frames,
                             cache_key="bench-video")
            engine.generate([user(kept, "What happens in this video?")], one)  # fills the kept cache
            follow = "When does the door close?"
            full = engine.generate([user(part, follow)], one)
            before = torch.cuda.memory_allocated() if torch.cuda.is_available() else None
            reuses = [engine.generate([user(kept, follow + "?" * k)], one) for k in range(3)]
            reuse = min(reuses, key=lambda r: r.metrics.ttft_ms)
            engine.settings.fast_decode = "off"
            plain_reuse = min((engine.generate([user(kept, follow + "!" * k)], one) for k in range(3)),
                              key=lambda r: r.metrics.ttft_ms)
            engine.settings.fast_decode = "on"
            out["follow_up_plain_path_ttft_ms"] = plain_reuse.metrics.ttft_ms
            engine.settings.profile_fast_decode = True
            profiled = engine.generate([user(kept, follow + "#")], one)
            engine.settings.profile_fast_decode = False
            phases = engine._fast.last_stats.phases_ms if engine._fast is not None else None
            print(f"follow-up with reuse, fast path phases (synchronised, ms): {phases}; ttft {profiled.metrics.ttft_ms:.0f}")
            print(f"follow-up with reuse, plain decode path: ttft {plain_reuse.metrics.ttft_ms:.0f} ms "
                  f"(preprocess {plain_reuse.metrics.preprocess_ms:.0f} ms, prefill {plain_reuse.metrics.prefill_ms:.0f} ms); "
                  f"fast path: preprocess {reuse.metrics.preprocess_ms:.0f} ms, prefill {reuse.metrics.prefill_ms:.0f} ms")
            kept_bytes = engine.prefixes.nbytes
            out["follow_up"] = {"ttft_full_ms": full.metrics.ttft_ms, "ttft_reuse_ms": reuse.metrics.ttft_ms,
                                "speedup": full.metrics.ttft_ms / reuse.metrics.ttft_ms,
                                "kept_cache_bytes": kept_bytes, "reused_tokens": reuse.metrics.reused_prefix_tokens,
                                "allocated_with_cache_bytes": before}
            print(f"follow-up question on the {args.frames}-frame video: time to first token "
                  f"{full.metrics.ttft_ms:.0f} ms full recompute vs {reuse.metrics.ttft_ms:.0f} ms with prefix reuse "
                  f"({full.metrics.ttft_ms / reuse.metrics.ttft_ms:.1f}x); kept cache {gib(kept_bytes)} for "
                  f"{reuse.metrics.reused_prefix_tokens} tokens")
            for path in [p for p in args.paths.split(",") if p != "plain"] or ["plain"]:
                use(path)
                engine.generate([user(kept, "Describe everything.")], greedy)  # same cache bucket: graph captured
                long = engine.generate([user(kept, "Describe everything in detail.")], greedy)
                out[f"decode_b1_video_prompt_{path}_tokens_per_s"] = long.metrics.decode_tokens_per_s
                print(f"decode batch 1 after the {args.frames}-frame video prompt ({long.prompt_tokens} tokens), "
                      f"{NAMES[path]} ({long.metrics.decode_path}): {long.metrics.decode_tokens_per_s:.1f} tokens/s "
                      f"({long.metrics.decode_tokens_per_s / limit:.2f} of the limit)")
        del frames, part, q
    return kept


if __name__ == "__main__":
    sys.exit(main())

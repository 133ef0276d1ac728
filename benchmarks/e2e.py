"""End to end on long videos (issue 14): VLScope with its defaults against the usual recipe, in one process.

On a CUDA machine, with random weights of the exact Qwen3-VL shape (default 4B, bf16):
  1. makes (or takes) a 10-minute 1280x720 H.264 video with a key frame every 2 s, and a 60-minute one by
     remuxing it six times (stream copy, seconds);
  2. VLScope, every default, through the application layer (Runtime -> video service -> VideoQA): the first
     answer on a fresh video (sample + encode + prefill + first token), a follow-up's time to first token,
     peak GPU memory, the prefill of the video, decode speed after a short prompt and after the long one;
  3. the usual recipe (OpenCV read of every frame, 1 fps kept, the processor's own video budget, plain
     `generate`, no kept prefix) as the baseline, in the same process;
  4. a second process reopening the same video over the same cache folder (first answer after a restart);
  5. the 10- and 60-minute videos under a 24 GB budget (`torch.cuda.set_per_process_memory_fraction`).
Prints one table of figures and ratios; `--json` writes them too. Random weights mean random text: the
figures measure the machinery. Not a test: nothing here passes or fails.

    python benchmarks/e2e.py --folder /tmp/m4b --videos /tmp/videos [--video10 FILE] [--skip-60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GIB = 1024**3
QUESTION = "What happens in this video? Answer in one sentence."
FOLLOW_UP = "And which colours are used?"  # a follow-up on the same video: its kept prefix is reused
TIMED = "What happens at 3:15?"  # a time in the question: a dense look at that stretch (its own prefix)


def remux_repeated(src: Path, dst: Path, times: int) -> None:
    """`times` copies of `src` one after another, stream copy (no re-encode): a long video in seconds."""
    import av

    if dst.exists() and dst.stat().st_size > 0:
        return
    tmp = dst.with_suffix(".part.mp4")
    with av.open(str(src)) as first:
        in_stream = first.streams.video[0]
        duration = float(in_stream.duration * in_stream.time_base) if in_stream.duration else float(first.duration) / 1e6
    with av.open(str(tmp), "w", format="mp4") as out:
        out_stream = None
        for k in range(times):
            with av.open(str(src)) as inp:
                stream = inp.streams.video[0]
                if out_stream is None:
                    out_stream = out.add_stream_from_template(stream)
                shift = int(round(k * duration / stream.time_base))
                for packet in inp.demux(stream):
                    if packet.dts is None:
                        continue
                    packet.dts += shift
                    packet.pts = (packet.pts or 0) + shift
                    packet.stream = out_stream
                    out.mux(packet)
    os.replace(tmp, dst)


def cut_head(src: Path, dst: Path, seconds: float) -> None:
    """The first `seconds` of `src`, stream copy: a short video for the warm-up process."""
    import av

    if dst.exists() and dst.stat().st_size > 0:
        return
    tmp = dst.with_suffix(".part.mp4")
    with av.open(str(src)) as inp, av.open(str(tmp), "w", format="mp4") as out:
        stream = inp.streams.video[0]
        out_stream = out.add_stream_from_template(stream)
        for packet in inp.demux(stream):
            if packet.dts is None:
                continue
            if packet.pts is not None and float(packet.pts * stream.time_base) >= seconds:
                break
            packet.stream = out_stream
            out.mux(packet)
    os.replace(tmp, dst)


def make_video_10min(path: Path) -> None:
    """10 minutes of 1280x720 30 fps H.264 with a key frame every 2 s (ffmpeg when present, else PyAV)."""
    if path.exists() and path.stat().st_size > 0:
        return
    from shutil import which

    tmp = path.with_suffix(".part.mp4")
    if which("ffmpeg"):
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30:duration=600",
                        "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "120k", "-g", "60", "-keyint_min", "60",
                        "-sc_threshold", "0", "-pix_fmt", "yuv420p", str(tmp)], check=True)
    else:  # PyAV's libx264, a frame at a time (slow: minutes)
        import av
        import numpy as np

        with av.open(str(tmp), "w") as out:
            stream = out.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
            stream.options = {"preset": "ultrafast", "g": "60", "keyint_min": "60", "sc_threshold": "0", "b": "120k"}
            base = np.zeros((720, 1280, 3), dtype=np.uint8)
            for i in range(600 * 30):
                base[:] = (i // 30 * 7) % 255
                base[300:420, (i * 4) % 1160:(i * 4) % 1160 + 120] = 255
                for packet in stream.encode(av.VideoFrame.from_ndarray(base, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
    os.replace(tmp, path)


def first_chunk_s(stream: Any, t0: float | None = None) -> float | None:
    """Seconds from `t0` (default: now) to the stream's first chunk; the stream is read to its end."""
    t0 = time.perf_counter() if t0 is None else t0
    first = None
    for _ in stream:
        if first is None:
            first = time.perf_counter() - t0
    return first


def vlscope_run(model: Path, cache_dir: Path, video: Path, follow_up: bool = True) -> dict[str, Any]:
    """VLScope with every default: the first answer, a follow-up, memory and speeds, as a user gets them."""
    import torch

    from core.app import Runtime
    from core.cache import hash_file
    from core.settings import Settings
    from core.vlm.types import GenerationParams

    out: dict[str, Any] = {}
    settings = Settings(model=str(model), cache_dir=cache_dir,
                        profile_fast_decode=os.environ.get("VLSCOPE_E2E_PROFILE") == "1")
    runtime = Runtime.build(settings)
    t0 = time.perf_counter()
    runtime.engine.load()
    out["load_s"] = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    greedy = GenerationParams(max_new_tokens=64, temperature=0.0)
    t0 = time.perf_counter()
    sha = hash_file(video)
    info = runtime.video.probe(video, sha)
    choice = runtime.video.plan(info)
    out["plan"] = {"frames": choice.estimate.frames, "visual_tokens": choice.estimate.visual_tokens,
                   "frame_size": f"{choice.estimate.frame_width}x{choice.estimate.frame_height}",
                   "estimated_peak_gib": choice.estimate.peak_gpu_bytes / GIB,
                   "reasons": list(getattr(choice, "reasons", []) or [])}
    qa = runtime.video.questions(video, choice.plan, sha, info)
    out["first_answer_ttft_s"] = first_chunk_s(runtime.video.stream_ask(qa, QUESTION, greedy, refine=False), t0)
    out["first_answer_total_s"] = time.perf_counter() - t0
    fast = getattr(getattr(runtime.engine, "_runner", None), "fast", None)
    stats = getattr(fast, "last_stats", None)
    out["first_answer_phases_ms"] = getattr(stats, "phases_ms", None)  # with VLSCOPE_E2E_PROFILE=1
    out["peak_first_answer_gib"] = torch.cuda.max_memory_allocated() / GIB  # one video at the default plan
    records = runtime.engine.ledger.records()
    last = records[-1]
    ingest = getattr(getattr(runtime.engine, "feature_memory", None), "last_ingest", None)
    if ingest is not None:  # the first answer's pipelined ingest (decode, preprocess, vision tower, store)
        out["ingest"] = {"seconds": ingest.seconds, "parts": ingest.parts, "encoded": ingest.encoded,
                         "phases_s": ingest.phases_s}
    prefixes = getattr(runtime.engine, "prefixes", None)
    disk = getattr(prefixes, "disk", None)
    if disk is not None:  # a restart reads the video's prefix back from the disk tier instead of prefilling
        out["prefix_from_disk"] = prefixes.disk_hits
        out["prefix_disk_load_s"] = disk.last_load_s
    out["prefill_ms"] = last.prefill_ms
    out["preprocess_ms"] = last.preprocess_ms
    out["prompt_tokens"] = last.prompt_tokens
    out["visual_tokens"] = last.visual_tokens
    out["decode_long_tps"] = last.decode_tokens_per_s
    if follow_up:
        out["follow_up_ttft_s"] = first_chunk_s(runtime.video.stream_ask(qa, FOLLOW_UP, greedy, refine=False))
        out["follow_up_engine_ttft_ms"] = runtime.engine.ledger.records()[-1].ttft_ms
        # decode after the long prompt, with the step's graph already captured: 256 tokens on the kept prefix
        for _ in runtime.video.stream_ask(qa, "Describe every scene in detail.",
                                          GenerationParams(max_new_tokens=256, temperature=0.0), refine=False):
            pass
        out["decode_long_tps"] = runtime.engine.ledger.records()[-1].decode_tokens_per_s
        out["timed_question_ttft_s"] = first_chunk_s(runtime.video.stream_ask(qa, TIMED, greedy, refine=False))
        if getattr(runtime.engine, "feature_memory", None) is not None:
            runtime.engine.feature_memory.wait()  # the features' background save, before the process ends
    out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / GIB
    from core.vlm.types import user

    # twice: the first short request makes its cache bucket and captures its graph; the second is steady
    for key in ("decode_short_first_tps", "decode_short_tps"):
        short = runtime.engine.generate([user("Describe a harbour at dusk.")],
                                        GenerationParams(max_new_tokens=256, temperature=0.0))
        out[key] = short.metrics.decode_tokens_per_s
    info_now = runtime.engine.info()
    out["decoding"] = info_now.decoding
    runtime.close()
    return out


def usual_recipe(model: Path, video: Path) -> dict[str, Any]:
    """OpenCV reads every frame, keeps 1 per second, the processor's own budget, plain generate, no kept prefix."""
    import cv2
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.video_utils import VideoMetadata

    out: dict[str, Any] = {}
    processor = AutoProcessor.from_pretrained(model)
    net = AutoModelForImageTextToText.from_pretrained(model, dtype=torch.bfloat16, device_map="cuda")
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    frames, indices, i = [], [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i % int(round(fps)) == 0:
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            indices.append(i)
        i += 1
    cap.release()
    if len(frames) % 2:
        frames, indices = frames[:-1], indices[:-1]
    out["read_s"] = time.perf_counter() - t0
    meta = VideoMetadata(total_num_frames=i, fps=fps, frames_indices=indices, duration=i / fps)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    t1 = time.perf_counter()
    inputs = processor(text=[text], videos=[frames], video_metadata=[meta], do_sample_frames=False,
                       return_tensors="pt").to("cuda")
    out["processor_s"] = time.perf_counter() - t1
    out["prompt_tokens"] = int(inputs["input_ids"].shape[1])
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    net.generate(**inputs, max_new_tokens=1, do_sample=False)
    torch.cuda.synchronize()
    out["first_token_s"] = time.perf_counter() - t2
    out["first_answer_ttft_s"] = time.perf_counter() - t0
    t3 = time.perf_counter()
    net.generate(**inputs, max_new_tokens=1, do_sample=False)  # a follow-up: everything again
    torch.cuda.synchronize()
    out["follow_up_ttft_s"] = time.perf_counter() - t3
    out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / GIB
    del net
    torch.cuda.empty_cache()
    return out


def child(args: argparse.Namespace) -> int:
    """One measured run in a clean process; prints one JSON line."""
    import logging

    import torch

    logging.basicConfig(level=logging.WARNING, format="WARNING %(name)s: %(message)s")

    if args.budget_gb:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.budget_gb * GIB / total))
    try:
        if args.child == "vlscope":
            result = vlscope_run(Path(args.folder), Path(args.cache), Path(args.video), follow_up=not args.no_follow_up)
        else:
            result = usual_recipe(Path(args.folder), Path(args.video))
        result["ok"] = True
    except Exception as exc:  # noqa: BLE001 - a failed run is a figure too (e.g. out of memory under a budget)
        result = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:400]}"}
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def run_child(kind: str, args: argparse.Namespace, video: Path, cache: Path, budget_gb: float = 0.0,
              follow_up: bool = True) -> dict[str, Any]:
    cmd = [sys.executable, "-u", __file__, "--child", kind, "--folder", args.folder, "--video", str(video),
           "--cache", str(cache)]
    if budget_gb:
        cmd += ["--budget-gb", str(budget_gb)]
    if not follow_up:
        cmd += ["--no-follow-up"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    warnings = [ln[-300:] for ln in proc.stderr.splitlines() if "WARNING" in ln or "warning" in ln[:40]][-8:]
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            data = json.loads(line[7:])
            data["process_s"] = time.perf_counter() - t0
            if warnings:
                data["warnings"] = warnings
            return data
    return {"ok": False, "error": (proc.stderr or proc.stdout)[-800:]}


def fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.2f}{unit}"
    return f"{v}{unit}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", default="/tmp/m4b", help="random-weight model folder (built there if missing)")
    p.add_argument("--size", default="4b")
    p.add_argument("--videos", default="/tmp/videos")
    p.add_argument("--video10", default="", help="a ready 10-minute video (else made)")
    p.add_argument("--skip-60", action="store_true")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--skip-budget", action="store_true", help="no 24 GB runs (and no 60-minute video)")
    p.add_argument("--timeout", type=int, default=400)
    p.add_argument("--json", default="")
    p.add_argument("--child", default="")
    p.add_argument("--video", default="")
    p.add_argument("--cache", default="")
    p.add_argument("--budget-gb", type=float, default=0.0)
    p.add_argument("--no-follow-up", action="store_true")
    p.add_argument("--no-warm-up", action="store_true", help="measure the fresh video in the machine's first process")
    args = p.parse_args()
    if args.child:
        return child(args)
    args.skip_60 = args.skip_60 or args.skip_budget

    import torch

    if not torch.cuda.is_available():
        print("needs a CUDA GPU (this is the H200 benchmark)")
        return 2
    from benchmarks.engine import random_model_folder

    random_model_folder(args.folder, args.size)
    videos = Path(args.videos)
    videos.mkdir(parents=True, exist_ok=True)
    v10 = Path(args.video10) if args.video10 else videos / "talk-10min-720p.mp4"
    t = time.perf_counter()
    make_video_10min(v10)
    made10 = time.perf_counter() - t
    v60 = videos / "talk-60min-720p.mp4"
    if not args.skip_60:
        t = time.perf_counter()
        remux_repeated(v10, v60, 6)
        made60 = time.perf_counter() - t
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; videos ready "
          f"(10 min: {made10:.1f} s; 60 min by remux: {0 if args.skip_60 else made60:.1f} s)", flush=True)

    cache = videos / "vlscope-cache"
    if cache.exists():
        import shutil

        shutil.rmtree(cache)
    results: dict[str, Any] = {}
    if not args.no_warm_up:
        # the first process on a fresh machine also compiles the decoder's Triton kernels and fills the OS caches
        # (once per machine, kept on disk): a short video takes that, so the fresh-video figure is the video's own
        head = videos / "head-30s.mp4"
        cut_head(v10, head, 30.0)
        results["warm_up"] = run_child("vlscope", args, head, videos / "cache-warm-up", follow_up=False)
        print("warm-up (first process on this machine, a 30-second video):", json.dumps(results["warm_up"]),
              flush=True)
    results["vlscope_fresh"] = run_child("vlscope", args, v10, cache)
    print("vlscope fresh:", json.dumps(results["vlscope_fresh"]), flush=True)
    results["vlscope_restart"] = run_child("vlscope", args, v10, cache)
    print("vlscope after a restart:", json.dumps(results["vlscope_restart"]), flush=True)
    if not args.skip_baseline:
        results["usual_recipe"] = run_child("usual", args, v10, cache)
        print("usual recipe:", json.dumps(results["usual_recipe"]), flush=True)
    if not args.skip_budget:
        results["vlscope_24gb_10min"] = run_child("vlscope", args, v10, videos / "cache-24gb-10", budget_gb=24,
                                                  follow_up=False)
        print("vlscope, 24 GB budget, 10 min:", json.dumps(results["vlscope_24gb_10min"]), flush=True)
    if not args.skip_60:
        results["vlscope_24gb_60min"] = run_child("vlscope", args, v60, videos / "cache-24gb-60", budget_gb=24,
                                                  follow_up=False)
        print("vlscope, 24 GB budget, 60 min:", json.dumps(results["vlscope_24gb_60min"]), flush=True)

    # the decode limit: language-model bytes per token over the copy bandwidth, in this process
    from benchmarks.engine import copy_bandwidth_bytes_per_s

    bw = copy_bandwidth_bytes_per_s(torch)
    lm_bytes = 4.02e9 * 2  # 36 layers x 100.9 M + lm_head 389 M parameters, bf16 (field notes, 2026-12-01)
    kv = results["vlscope_fresh"].get("prompt_tokens") or 0
    kv_bytes = kv * 144 * 1024
    results["decode_limit_short_tps"] = bw / lm_bytes
    results["decode_limit_long_tps"] = bw / (lm_bytes + kv_bytes)
    results["copy_bandwidth_tbs"] = bw / 1e12

    f, r, u = results["vlscope_fresh"], results["vlscope_restart"], results.get("usual_recipe", {})
    streamed = ((f.get("ingest") or {}).get("phases_s") or {}).get("prefill")
    rows = [
        ("first answer, fresh video (s)", f.get("first_answer_ttft_s"), u.get("first_answer_ttft_s"), "13.7", "<= 6"),
        ("follow-up, time to first token (s)", f.get("follow_up_ttft_s"), u.get("follow_up_ttft_s"), "4.3", "<= 0.3"),
        ("first answer after a restart (s)", r.get("first_answer_ttft_s"), u.get("first_answer_ttft_s"), "13.7",
         "<= 1.5"),
        ("peak GPU memory, default plan (GiB)", f.get("peak_first_answer_gib"), u.get("peak_gpu_gib"), "30.5",
         "<= 20"),
        ("peak GPU memory, all questions (GiB)", f.get("peak_gpu_gib"), None, "", "(two prefixes kept)"),
        # with the prefix prefilled part by part during the ingest, the first answer's own prefill is its question
        # only: the video's prefill is then the stream's model time in the ingest
        ("prefill of the video (s)" + (", during the ingest" if streamed is not None else ""),
         streamed if streamed is not None else (f.get("prefill_ms") or 0) / 1000, u.get("first_token_s"), "3.0",
         "<= 1.5"),
        ("the first answer's own prefill (s)", (f.get("prefill_ms") or 0) / 1000, None, "", ""),
        ("decode after a short prompt (tokens/s)", f.get("decode_short_tps"), None, "299", ">= 400"),
        ("  the same, its first request (tokens/s)", f.get("decode_short_first_tps"), None, "", ""),
        ("decode after the video prompt (tokens/s)", f.get("decode_long_tps"), None, "190", ">= 300"),
    ]
    print()
    print(f"{'measure':<44} {'VLScope':>10} {'usual recipe':>13} {'ratio':>7} {'before':>8} {'target':>8}")
    for name, a, b, before, target in rows:
        ratio = f"{b / a:.1f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else ""
        print(f"{name:<44} {fmt(a):>10} {fmt(b):>13} {ratio:>7} {before:>8} {target:>8}")
    print(f"VLScope plan: {f.get('plan')}; prompt {f.get('prompt_tokens')} tokens ({f.get('visual_tokens')} visual); "
          f"usual recipe prompt {u.get('prompt_tokens')} tokens")
    print(f"decode limit (LM weights + KV per token over {results['copy_bandwidth_tbs']:.2f} TB/s copy): "
          f"{results['decode_limit_short_tps']:.0f} tokens/s short, {results['decode_limit_long_tps']:.0f} after the "
          f"video prompt; decoding: {f.get('decoding')}")
    if "warm_up" in results:
        w = results["warm_up"]
        print(f"warm-up process (first on this machine, 30-second video): first answer "
              f"{fmt(w.get('first_answer_ttft_s'), ' s')}, model load {fmt(w.get('load_s'), ' s')}")
    for key in ("vlscope_24gb_10min", "vlscope_24gb_60min"):
        if key in results:
            x = results[key]
            print(f"{key}: {'ran' if x.get('ok') else 'FAILED'}; peak {fmt(x.get('peak_gpu_gib'), ' GiB')}; "
                  f"first answer {fmt(x.get('first_answer_ttft_s'), ' s')}; plan {x.get('plan')}; {x.get('error', '')}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the first answer's time and memory go (issue 14), on the H200 with the random 4B shape. Not a test.

Two fresh processes on the 10-minute video at the default plan, through the application layer as e2e.py:
  memory: CUDA memory history recorded during the first answer; the allocations alive at the peak, grouped by
          the code that made them (the first frame in core/ or transformers/);
  time:   the first answer with the prefill timed (synchronised), then in the same process the same prefill again
          (warm), at a length it has not seen (a cold shape), and the stored features read back (restart path:
          bytes from the store, parse, copy to the GPU).

    python benchmarks/first_answer_probe.py --folder /tmp/m4b --video /tmp/videos/talk-10min-720p.mp4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
GIB = 1024**3
QUESTION = "What happens in this video?"


def _site(frames: list[dict[str, Any]]) -> str:
    picked = [f for f in frames if "/core/" in f.get("filename", "") or "transformers/" in f.get("filename", "")]
    picked = picked or frames
    return " < ".join(f"{Path(f['filename']).name}:{f['line']}:{f['name']}" for f in picked[:3])


def peak_breakdown(snapshot: dict[str, Any], top: int = 18) -> dict[str, Any]:
    """The allocations alive at the highest point of the recorded trace, by allocation site."""
    events = snapshot["device_traces"][0]
    live: dict[int, tuple[int, list]] = {}
    total, best, best_i = 0, 0, -1
    for i, e in enumerate(events):
        if e["action"] == "alloc":
            live[e["addr"]] = (e["size"], e.get("frames", []))
            total += e["size"]
            if total > best:
                best, best_i = total, i
        elif e["action"] in ("free_completed",) and e["addr"] in live:
            total -= live.pop(e["addr"])[0]
    live = {}
    for e in events[:best_i + 1]:
        if e["action"] == "alloc":
            live[e["addr"]] = (e["size"], e.get("frames", []))
        elif e["action"] == "free_completed":
            live.pop(e["addr"], None)
    sites: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for size, frames in live.values():
        s = sites[_site(frames)]
        s[0] += size
        s[1] += 1
    rows = sorted(sites.items(), key=lambda kv: -kv[1][0])[:top]
    return {"trace_peak_gib_above_start": best / GIB, "events": len(events),
            "sites": [{"gib": round(v[0] / GIB, 3), "count": v[1], "site": k} for k, v in rows]}


def first_answer(folder: Path, video: Path, cache: Path, history: bool) -> tuple[Any, Any, dict[str, Any]]:
    import torch

    from core.app import Runtime
    from core.cache import hash_file
    from core.settings import Settings
    from core.vlm import featurestore
    from core.vlm.types import GenerationParams

    out: dict[str, Any] = {}
    captured: dict[str, Any] = {}
    original = featurestore.FeatureMemory.prefill

    def timed_prefill(self: Any, inputs: Any) -> Any:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        got = original(self, inputs)
        torch.cuda.synchronize()
        captured.setdefault("prefill_s", time.perf_counter() - t0)
        captured.setdefault("inputs", inputs)
        captured["memory"] = self
        return got

    featurestore.FeatureMemory.prefill = timed_prefill
    from core.vlm import fastdecode

    original_load = fastdecode.FastDecoder._load_prefix

    def watched_load(self: Any, kv: Any, length: int) -> Any:
        import gc

        if "holders" not in captured:  # who else holds the kept cache's first key tensor
            t = kv.layers[0].keys
            holders = []
            for ref in gc.get_referrers(t):
                if isinstance(ref, dict):
                    holders.append("dict:" + ",".join(map(str, list(ref.keys())[:8])))
                elif hasattr(ref, "f_code"):
                    holders.append(f"frame:{ref.f_code.co_filename.split('/')[-1]}:{ref.f_code.co_name}")
                else:
                    holders.append(type(ref).__name__)
            captured["holders"] = holders
            captured["refcount"] = sys.getrefcount(t)
        return original_load(self, kv, length)

    fastdecode.FastDecoder._load_prefix = watched_load
    runtime = Runtime.build(Settings(model=str(folder), cache_dir=cache))
    runtime.engine.load()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    out["weights_gib"] = base / GIB
    torch.cuda.reset_peak_memory_stats()
    if history:
        torch.cuda.memory._record_memory_history(max_entries=2_000_000, stacks="python")
    t0 = time.perf_counter()
    sha = hash_file(video)
    info = runtime.video.probe(video, sha)
    choice = runtime.video.plan(info)
    qa = runtime.video.questions(video, choice.plan, sha, info)
    first = None
    for _ in runtime.video.stream_ask(qa, QUESTION, GenerationParams(max_new_tokens=16, temperature=0.0),
                                      refine=False):
        first = first if first is not None else time.perf_counter() - t0
    out["first_answer_ttft_s"] = first
    out["peak_gib"] = torch.cuda.max_memory_allocated() / GIB
    out["estimated_peak_gib"] = choice.estimate.peak_gpu_bytes / GIB
    out["prefill_in_answer_s"] = captured.get("prefill_s")
    out["kept_key_holders"] = captured.get("holders")
    out["kept_key_refcount"] = captured.get("refcount")
    mem = captured.get("memory")
    ingest = getattr(mem, "last_ingest", None)
    if ingest is not None:
        out["ingest"] = {"seconds": ingest.seconds, "phases_s": ingest.phases_s}
    if history:
        snap = torch.cuda.memory._snapshot()
        torch.cuda.memory._record_memory_history(enabled=None)
        out["at_peak"] = peak_breakdown(snap)
        out["start_gib"] = base / GIB
    featurestore.FeatureMemory.prefill = original
    return runtime, captured, out


def time_child(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from core.vlm import features as F
    from core.vlm import featurestore

    runtime, captured, out = first_answer(Path(args.folder), Path(args.video), Path(args.cache), history=False)
    mem, inputs = captured["memory"], captured["inputs"]
    mem.wait()

    def prefill_s(inp: Any) -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        kv, _ = F.prefill(mem.model, inp, inp.features, mem.chunk_for(int(inp["input_ids"].shape[1])))
        torch.cuda.synchronize()
        del kv
        return time.perf_counter() - t0

    runtime.engine.prefixes.clear()  # the kept prefix out of the GPU, as before a new video
    torch.cuda.empty_cache()
    out["prefill_warm_s"] = [prefill_s(inputs) for _ in range(2)]
    # a length not seen yet: 64 more text tokens before the video
    n = int(inputs["input_ids"].shape[1])
    text = "x " * 64
    longer = F.FeaturePrefill(F.prompt_inputs(mem.processor, text + "<|vision_start|>" + mem.processor.video_token
                                              + "<|vision_end|>", inputs.meta, mem.model.device), inputs.meta,
                              inputs.features)
    out["cold_shape_tokens"] = [n, int(longer["input_ids"].shape[1])]
    out["prefill_cold_shape_s"] = prefill_s(longer)
    out["prefill_cold_shape_again_s"] = prefill_s(longer)
    # the restart path's read of the stored features
    key = next(iter(mem._known), None)
    if key:
        mem.forget(key)
        manifest = mem._manifest(key)
        t0 = time.perf_counter()
        blobs = [mem._read(mem.part_key(key, i)) for i in range(manifest.parts)]
        out["restart_read_s"] = time.perf_counter() - t0
        out["restart_read_gib"] = sum(len(b) for b in blobs) / GIB
        t0 = time.perf_counter()
        parts = [F.from_bytes(b) for b in blobs]
        out["restart_parse_s"] = time.perf_counter() - t0
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for p in parts:
            p.pooler.to("cuda")
            [d.to("cuda") for d in p.deepstack]
        torch.cuda.synchronize()
        out["restart_to_gpu_s"] = time.perf_counter() - t0
        del parts, blobs
        from concurrent.futures import ThreadPoolExecutor

        for readers in (1, 4, 8):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(readers) as pool:
                list(pool.map(lambda i: len(mem._read(mem.part_key(key, i))), range(manifest.parts)))
            out[f"restart_read_{readers}_threads_s"] = time.perf_counter() - t0
        for readers in (1, 4, 8):
            featurestore.READERS = readers
            mem.forget(key)
            t0 = time.perf_counter()
            mem.load(key, mem.model.device)
            torch.cuda.synchronize()
            out[f"restart_load_{readers}_readers_s"] = time.perf_counter() - t0
    runtime.close()
    return out


def child(args: argparse.Namespace) -> int:
    if args.child.endswith("-plain"):  # the MLP over the whole prompt at once, as transformers runs it
        import core.vlm.chunked_mlp as chunked

        chunked.CHUNK_TOKENS = 1 << 30
    try:
        if args.child.startswith("memory"):
            runtime, _, result = first_answer(Path(args.folder), Path(args.video), Path(args.cache), history=True)
            runtime.close()
        else:
            result = time_child(args)
        result["ok"] = True
    except Exception as exc:  # noqa: BLE001 - a failed probe is reported, not raised
        import traceback

        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", default="/tmp/m4b")
    ap.add_argument("--video", required=True)
    ap.add_argument("--cache", default="")
    ap.add_argument("--child", default="")
    ap.add_argument("--only", default="memory,memory-plain,time")
    ap.add_argument("--timeout", type=int, default=200)
    args = ap.parse_args()
    if args.child:
        return child(args)
    from benchmarks.engine import random_model_folder

    random_model_folder(args.folder, "4b")
    for kind in args.only.split(","):
        cache = tempfile.mkdtemp(prefix=f"probe-{kind}-")
        cmd = [sys.executable, "-u", __file__, "--child", kind, "--folder", args.folder, "--video", args.video,
               "--cache", cache]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        found = [ln[7:] for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        data = json.loads(found[0]) if found else {"ok": False, "error": proc.stderr[-1500:]}
        data["process_s"] = time.perf_counter() - t0
        print(f"== {kind}", flush=True)
        if kind.startswith("memory") and data.get("at_peak"):
            peak = data.pop("at_peak")
            print(json.dumps(data), flush=True)
            print(f"trace peak {peak['trace_peak_gib_above_start']:.2f} GiB above the start "
                  f"(weights {data.get('start_gib', 0):.2f} GiB), {peak['events']} events")
            for s in peak["sites"]:
                print(f"  {s['gib']:7.3f} GiB  x{s['count']:<5d} {s['site']}")
        else:
            print(json.dumps(data), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Four users asking at once: served as one batch vs one after another (real 4B shape, random weights).

Each request is an image (640x480) plus a question, decoding 128 tokens greedily on the fast path.
Prints the wall time of both ways and the ratio. Needs a CUDA GPU.

    python benchmarks/concurrency.py --folder /tmp/m4b
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", default="/tmp/m4b")
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("This benchmark needs a CUDA GPU.")
        return 2
    from benchmarks.engine import random_model_folder
    from core.settings import Settings
    from core.vlm import GenerationParams, ImagePart, user
    from core.vlm.local import LocalEngine

    folder = random_model_folder(args.folder)
    engine = LocalEngine(Settings(model=str(folder), device="cuda", dtype="bf16", cache_dir=folder / "cache",
                                  fast_decode="on", max_batch_size=args.users, batch_window_ms=20))
    engine.load()
    engine.model.generation_config.eos_token_id = None
    rng = np.random.default_rng(0)
    requests = [[user(ImagePart(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)),
                      f"User {i}: describe this image in detail.")] for i in range(args.users)]
    params = GenerationParams(max_new_tokens=args.tokens, temperature=0.0, presence_penalty=0.0)

    def together() -> tuple[float, list]:
        out: list = [None] * len(requests)
        barrier = threading.Barrier(len(requests))

        def ask(i: int) -> None:
            barrier.wait()
            out[i] = engine.generate(requests[i], params)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(requests))]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return time.perf_counter() - t, out

    def one_by_one() -> tuple[float, list]:
        t = time.perf_counter()
        out = [engine.generate(r, params) for r in requests]
        return time.perf_counter() - t, out

    one_by_one()
    together()  # warm-ups: graphs for batch 1 and batch N
    seq_s, seq = min((one_by_one() for _ in range(2)), key=lambda x: x[0])
    bat_s, bat = min((together() for _ in range(2)), key=lambda x: x[0])
    same = [a.text == b.text for a, b in zip(seq, bat)]
    print(f"# {args.users} concurrent image+question requests, {args.tokens} tokens each, fast path, "
          f"{torch.cuda.get_device_name(0)}")
    print(f"one after another: {seq_s:.2f} s ({args.users * args.tokens / seq_s:.0f} tokens/s in all)")
    print(f"batched together:  {bat_s:.2f} s ({args.users * args.tokens / bat_s:.0f} tokens/s in all); "
          f"batch sizes {[r.metrics.batch_size for r in bat]}")
    for name, results in (("one after another", seq), ("batched together", bat)):
        mean = {k: sum(getattr(r.metrics, k) for r in results) / len(results)
                for k in ("preprocess_ms", "queue_ms", "prefill_ms", "ttft_ms", "decode_ms", "total_ms")}
        print(f"  {name}, mean per request (ms): " + ", ".join(f"{k[:-3]} {v:.0f}" for k, v in mean.items()))
    print(f"batched / sequential speed-up: {seq_s / bat_s:.2f}x; same greedy text per user: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps({"sequential_s": seq_s, "batched_s": bat_s, "speedup": seq_s / bat_s,
                                               "batch_sizes": [r.metrics.batch_size for r in bat],
                                               "same_text": same}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

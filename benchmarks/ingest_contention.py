"""What slows the pipelined ingest of a long video down: the ingest of the 10-minute 720p video at the default plan,
in one process, with one part of the pipeline taken away at a time (issue 14; random weights of the 4B shape).

  A  the ingest alone (decode, preprocess on the GPU, vision tower, store), no prefix
  B  A + the kept prefix prefilled part by part (what the first question does)
  C  B with the store a no-op (no serialising, no disk writes meanwhile)
  D  B with the frames preprocessed on the CPU
  E  B with every frame decoded before the ingest starts (no decoding meanwhile)
  F  B with the prefix's cache grown by concatenation at every part (as before its buffers were made once)
  G  B with the frames decoded in threads of this process, the prefix fed once they are decoded (before the
     worker processes of core.media.decodeproc)
  H  B with the prefix fed once the frames are decoded (decoded in worker processes all the same)

B is what the first question does by default: a 10-minute video is decoded in worker processes and each part is
prefilled as it comes.

    python3 -u benchmarks/ingest_contention.py --folder /tmp/m4b --video talk-10min-720p.mp4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _NoStore:
    """A feature store that keeps nothing."""

    def put_bytes(self, key: Any, blob: bytes) -> None:
        return None

    def contains(self, key: Any) -> bool:
        return False

    def get_bytes(self, key: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", default="/tmp/m4b")
    ap.add_argument("--video", required=True)
    ap.add_argument("--only", default="ABCDEFGH")
    ap.add_argument("--ready", action="store_true", help="the model folder is ready (e.g. a tiny model, to try this)")
    args = ap.parse_args()
    import torch

    from benchmarks.engine import random_model_folder
    from core import vlm as _vlm  # noqa: F401
    from core.app import Runtime
    from core.cache import hash_file
    from core.settings import Settings
    from core.vlm import ingest as ingest_module
    from core.vlm import prefixbuild

    if not args.ready:
        random_model_folder(args.folder, "4b")

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    runtime = Runtime.build(Settings(model=args.folder, cache_dir=Path(tempfile.mkdtemp())))
    runtime.engine.load()
    runtime.engine.prefixes.disk = None  # no 7 GB prefix writes between the variants
    video = Path(args.video)
    sha = hash_file(video)
    info = runtime.video.probe(video, sha)
    choice = runtime.video.plan(info)
    qa = runtime.video.questions(video, choice.plan, sha, info)
    memory = runtime.engine.feature_memory
    real_store, real_pixels, real_filled = memory.store, ingest_module.video_pixels, prefixbuild._filled_cache
    print(f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}; plan {choice.estimate.frames} frames "
          f"{choice.estimate.frame_width}x{choice.estimate.frame_height}", flush=True)
    rows = []
    for variant in args.only:
        key = f"{qa.source.content_key()}-{variant}-{time.time()}"
        qa.source.decode_processes = False if variant == "G" else None
        source = qa.source.ingest_input()
        if variant == "H":
            source.read_apart = False
        if variant == "E":
            frames = list(source.read(source.frame_indices, None))
            source.read = lambda numbers, cancel, frames=frames: iter(frames)
        memory.store = _NoStore() if variant == "C" else real_store
        if variant == "D":
            ingest_module.video_pixels = lambda processor, part, **kw: real_pixels(processor, part, as_given=True)
        prefixbuild._filled_cache = (lambda model, total: None) if variant == "F" else real_filled
        prefix_of = None if variant == "A" else (lambda meta, key=key: qa.prefix_messages(meta, key))
        sync()
        t0 = time.perf_counter()
        report = memory.ingest(key, source, reuse=False, keep=True, prefix_of=prefix_of)
        sync()
        seconds = time.perf_counter() - t0
        ingest_module.video_pixels = real_pixels
        memory.wait()
        runtime.engine.prefixes.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        rows.append((variant, seconds, report.phases_s))
        print(variant, f"{seconds:.2f} s", {k: round(v, 2) for k, v in report.phases_s.items()}, flush=True)
    print()
    print(f"{'variant':8s} {'seconds':>8s}  phases (s)")
    for variant, seconds, phases in rows:
        print(f"{variant:8s} {seconds:8.2f}  " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
    runtime.close()


if __name__ == "__main__":
    main()

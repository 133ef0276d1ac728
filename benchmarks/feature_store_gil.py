"""How long storing one video part's features holds the interpreter's lock (issue 14: the follow-up's first token).

The ingest stores each encoded part from a writer thread in the model's process. While a thread holds Python's
lock, the model's thread launches no kernel: on the H200 a follow-up's first token took 0.38 s with the parts being
written beside it, 0.20 s with the writer yielding and 0.14 s in a process with nothing to write (e2e runs 13, 14).
This stores parts of the 10-minute video's shape (3,840 visual tokens, hidden 2,560, three DeepStack maps, bf16:
78.6 MB a part) into a real result cache, while a second thread ticks every 0.5 ms and records its longest wait:

- the previous path: `safetensors.torch.save` to bytes, the envelope joined into one more copy, written;
- the current path: `core.vlm.features.to_buffer` (torch copies, which let go of the lock) and
  `ResultCache.put_bytes` streaming the envelope from views of the buffer.

With `--window VIDEO`, it also times what the next question does beside the writer: a 20-second window of VIDEO
at 2 fps decoded and resized by `MediaFrameSource.window` (the dense look of "what happens at 0:30?"), alone, then
while a writer thread stores parts by each path.

    python3 benchmarks/feature_store_gil.py [--parts 6] [--folder /tmp/gil-cache] [--window video.mp4]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

from core.cache import ResultCache, make_key
from core.cache.base import _KIND_BYTES, _envelope
from core.vlm.features import FeatureMeta, VisualFeatures, to_buffer

TOKENS, HIDDEN, DEEPSTACK = 3840, 2560, 3


class Ticker:
    """A thread that wakes every 0.5 ms; its longest gap is the longest time another thread held the lock."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            now = time.perf_counter()
            self.gaps.append(now - last)
            last = now
            time.sleep(0.0005)

    def take(self) -> tuple[float, float]:
        """(longest gap, seconds lost in gaps over 5 ms) since the last take, in ms and s."""
        gaps, self.gaps = self.gaps, []
        return max(gaps, default=0.0) * 1e3, sum(g for g in gaps if g > 0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def part() -> VisualFeatures:
    meta = FeatureMeta(grid=[8, 32, 60], frame_indices=list(range(16)), source_fps=30.0, total_frames=18000,
                       resized=[256, 480], frame_hw=[720, 1280], patch=16, merge=2, temporal_patch=2,
                       dtype="bfloat16", max_pixels_total=0)
    make = lambda: torch.randn(TOKENS, HIDDEN).to(torch.bfloat16)  # noqa: E731
    return VisualFeatures(meta, make(), [make() for _ in range(DEEPSTACK)])


def previous(cache: ResultCache, key, features: VisualFeatures) -> None:
    """The path before: safetensors' own save, the envelope joined, written as one bytes value."""
    from safetensors.torch import save

    tensors = {"pooler": features.pooler} | {f"deepstack.{k}": d for k, d in enumerate(features.deepstack)}
    blob = save(tensors, metadata={"vlscope": "{}"})
    cache._cache.set(str(key), _envelope(_KIND_BYTES, blob), tag=key.input_hash, retry=True)


def current(cache: ResultCache, key, features: VisualFeatures) -> None:
    cache.put_bytes(key, to_buffer(features))


def window_beside(video: Path, folder: Path, features: VisualFeatures, rounds: int = 3) -> None:
    """Seconds of a window decode alone and beside a writer storing parts by each path."""
    from core.analysis.sources import MediaFrameSource
    from core.media.sampling import SamplingPlan

    source = MediaFrameSource(video, plan=SamplingPlan())
    like = source.overview()

    def decode() -> float:
        t0 = time.perf_counter()
        clip = source.window(30.0, 50.0, 2.0, like=like)
        assert len(clip.frames) >= 20
        return time.perf_counter() - t0

    decode()  # the file's pages in memory, the decoder's set-up paid once
    results: dict[str, list[float]] = {"alone": [], "previous": [], "current": []}
    cache = ResultCache(folder / "window", size_limit_bytes=64 * 1024**3)
    for r in range(rounds):
        results["alone"].append(decode())
        for name, fn in (("previous", previous), ("current", current)):
            stop = threading.Event()

            def write(name: str = name, fn=fn) -> None:  # noqa: ANN001
                i = 0
                while not stop.is_set():
                    fn(cache, make_key("f" * 64, f"window-{name}", {"round": r, "part": i}), features)
                    i += 1

            writer = threading.Thread(target=write, daemon=True)
            writer.start()
            time.sleep(0.05)
            results[name].append(decode())
            stop.set()
            writer.join()
    cache.close()
    alone = statistics.median(results["alone"])
    print(f"\nwindow of 20 s at 2 fps ({video.name}), median of {rounds}:")
    for name, values in results.items():
        print(f"  {name:8s} {statistics.median(values):7.3f} s  ({statistics.median(values) / alone:.2f}x alone)  "
              f"{', '.join(f'{v:.3f}' for v in values)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=6)
    ap.add_argument("--folder", type=Path, default=None)
    ap.add_argument("--window", type=Path, default=None, help="a video to decode a window of beside the writer")
    args = ap.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="gil-cache-"))
    features = part()
    nbytes = sum(t.numel() * t.element_size() for t in [features.pooler, *features.deepstack])
    print(f"one part: {nbytes / 1e6:.1f} MB; {args.parts} parts per path, alternated; torch threads "
          f"{torch.get_num_threads()}", flush=True)
    ticker = Ticker()
    rows: dict[str, list[tuple[float, float, float]]] = {"previous": [], "current": []}
    try:
        cache = ResultCache(folder, size_limit_bytes=64 * 1024**3)
        for i in range(args.parts):
            for name, fn in (("previous", previous), ("current", current)):
                key = make_key("e" * 64, f"features-{name}", {"part": i})
                ticker.take()
                t0 = time.perf_counter()
                fn(cache, key, features)
                seconds = time.perf_counter() - t0
                longest, lost = ticker.take()
                rows[name].append((seconds, longest, lost))
                print(f"{name:8s} part {i}: {seconds:.3f} s, longest hold {longest:.1f} ms, lost {lost:.3f} s",
                      flush=True)
        cache.close()
        if args.window is not None:
            window_beside(args.window, folder, features)
    finally:
        ticker.stop()
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
    med = {name: [statistics.median(col) for col in zip(*r)] for name, r in rows.items()}
    print("\nmedian per part          seconds   longest hold (ms)   lost to holds > 5 ms (s)")
    for name, (s, longest, lost) in med.items():
        print(f"{name:22s} {s:9.3f} {longest:19.1f} {lost:26.3f}")
    p, c = med["previous"], med["current"]
    print(f"ratio current/previous: time {c[0] / p[0]:.2f}, longest hold {c[1] / max(p[1], 1e-9):.2f}, "
          f"lost {c[2] / max(p[2], 1e-9):.2f}")


if __name__ == "__main__":
    main()

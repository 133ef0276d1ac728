"""Which video decoders work on this machine, and how fast they give the default plan's frames (issue 14).

For one video and VLScope's default sampling plan (2 fps, at most 768 frames), times taking the plan's frames with:
  1. VLScope's reader as shipped (the ingest's: PyAV/OpenCV on the CPU, frames resized there to the plan's size);
  2. the same reader at the video's own size (what resizing on the CPU costs);
  3. PyAV with the CUDA hardware decoder (`hwaccel`), when its FFmpeg has one;
  4. torchcodec on the CPU and on the GPU (NVDEC), when it loads;
  5. PyNvVideoCodec (NVDEC), when it loads;
  and, for the decoders giving GPU frames, the resize to the plan's size on the GPU.
Prints frames/s and seconds for each, and why a decoder did not work. Not a test.

    python benchmarks/video_decoders.py VIDEO [--frames 768]
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def time_one(name: str, fn: Callable[[], Any], n: int, rows: list[tuple[str, str]]) -> Any:
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as exc:  # noqa: BLE001 - a decoder that does not work here is a finding, reported
        rows.append((name, f"does not work: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"))
        traceback.print_exc(limit=2)
        return None
    s = time.perf_counter() - t0
    rows.append((name, f"{s:7.2f} s  {n / s:8.1f} frames/s"))
    print(f"{name}: {s:.2f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("video")
    ap.add_argument("--frames", type=int, default=768)
    ap.add_argument("--only", default="", help="comma-separated numbers of the decoders to time (default: all)")
    args = ap.parse_args()
    from core.analysis.sources import MediaFrameSource
    from core.media.sampling import SamplingPlan, iter_samples, schedule_frames

    source = MediaFrameSource(args.video, plan=SamplingPlan(max_frames=args.frames))
    schedule = schedule_frames(source.info, source.plan)
    idx = list(schedule.indices)
    n = len(idx)
    h, w = schedule.height, schedule.width
    print(f"{args.video}: {source.info.width}x{source.info.height}, {source.info.duration:.0f} s, {source.info.fps} fps; "
          f"plan {n} frames at {w}x{h}, decode mode {schedule.mode} ({schedule.reason})", flush=True)
    rows: list[tuple[str, str]] = []
    only = {x.strip() for x in args.only.split(",") if x.strip()}

    def timed(name: str, fn: Callable[[], Any], n: int, rows: list[tuple[str, str]]) -> Any:
        return time_one(name, fn, n, rows) if not only or name.split(".")[0].rstrip("abc") in only else None

    ingest = source.ingest_input()
    timed("1. VLScope reader (CPU decode + CPU resize), as shipped", lambda: sum(1 for _ in ingest.read(idx, None)), n,
          rows)
    native = (source.info.width, source.info.height)
    timed("2. same reader, frames at the video's own size", lambda: sum(1 for _ in iter_samples(source.info, schedule,
                                                                                               size=native)), n, rows)
    import torch

    cuda = torch.cuda.is_available()

    def gpu_resize(frames: Any) -> Any:  # (N, H, W, 3) or (N, 3, H, W) uint8 on the GPU -> plan size
        from torchvision.transforms.v2 import functional as tvF

        x = frames if frames.shape[1] == 3 else frames.permute(0, 3, 1, 2)
        out = tvF.resize(x, [h, w], interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
        torch.cuda.synchronize()
        return out

    def pyav_hw() -> int:
        import av
        from av.codec.hwaccel import HWAccel, hwdevices_available

        print("PyAV", av.__version__, "hardware devices:", hwdevices_available(), flush=True)
        wanted, got = set(idx), 0
        with av.open(args.video, hwaccel=HWAccel(device_type="cuda", allow_software_fallback=False)) as c:
            for k, frame in enumerate(c.decode(video=0)):
                if k in wanted:
                    frame.to_ndarray(format="rgb24")
                    got += 1
                if k >= idx[-1]:
                    break
        return got

    timed("3. PyAV + CUDA hwaccel (NVDEC)", pyav_hw, n, rows)

    def torchcodec(device: str) -> Any:
        from torchcodec.decoders import VideoDecoder

        dec = VideoDecoder(args.video, device=device, **({} if device == "cuda" else {"num_ffmpeg_threads": 0}))
        batch = dec.get_frames_at(idx).data
        if device == "cuda":
            torch.cuda.synchronize()
        return batch

    timed("4a. torchcodec, CPU", lambda: torchcodec("cpu"), n, rows)
    if cuda:
        frames = timed("4b. torchcodec, CUDA (NVDEC)", lambda: torchcodec("cuda"), n, rows)
        if frames is not None:
            timed("4c. ... + resize on the GPU", lambda: gpu_resize(frames), n, rows)

    def pynv() -> Any:
        import PyNvVideoCodec as nvc

        dec = nvc.SimpleDecoder(args.video, gpu_id=0, use_device_memory=True,
                                output_color_type=nvc.OutputColorType.RGB)
        got = dec.get_batch_frames_by_index(idx)
        out = torch.stack([torch.from_dlpack(f) for f in got])
        torch.cuda.synchronize()
        return out

    if cuda:
        frames = timed("5a. PyNvVideoCodec SimpleDecoder (NVDEC)", pynv, n, rows)
        if frames is not None:
            print("PyNvVideoCodec frames", tuple(frames.shape), frames.dtype, flush=True)
            timed("5b. ... + resize on the GPU", lambda: gpu_resize(frames), n, rows)
    print(f"\n{n} frames of the default plan ({w}x{h}) from {Path(args.video).name}:")
    for name, what in rows:
        print(f"  {name:58s} {what}")


if __name__ == "__main__":
    main()

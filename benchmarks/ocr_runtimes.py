"""Can the recognition of an A4 page get faster on this CPU without changing what it reads? (issue 15)

RapidOCR's recognition model takes about 2.7 s of the 3.2 s a printed A4 page costs on a 2-core machine (40 line
crops, narrowed to 0.65 of their width). This times one batch as RapidOCR feeds it (6 crops of 48 x 1500 px: the
shape of a narrowed A4 line scaled to the model's height) through what could run the same model here:

- onnxruntime with 2 threads (the baseline, what VLScope runs) and with 1 (does the second core pay?);
- two 1-thread sessions side by side on two threads (the cores shared by batches instead of inside one);
- OpenVINO's CPU runtime (`pip install openvino`; RapidOCR can use it);
- int8 weights: dynamic quantisation of the matrix products, static quantisation of convolutions and matrix
  products (`pip install onnx`; calibrated on random crops, so only its speed is meaningful);
- another offline model: PP-OCRv4 mobile recognition (`--v4 PATH`, e.g. from the `rapidocr_onnxruntime` 1.4.4
  wheel on PyPI, `rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx`).

Each is timed as the mean of 3 runs after a warm-up, printed with its ratio to the baseline from the same process.
What is not installed is said and skipped.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


def rec_model() -> Path:
    import rapidocr

    found = sorted((Path(rapidocr.__file__).parent / "models").glob("*rec*.onnx"))
    if not found:
        raise SystemExit("RapidOCR's recognition model is not in its package folder (run it once to fetch it)")
    return found[0]


def timed(run: Callable[[], Any], repeat: int = 3) -> float:
    run()
    t = time.perf_counter()
    for _ in range(repeat):
        run()
    return (time.perf_counter() - t) / repeat


def ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_runner(path: Path, batch: np.ndarray, threads: int = 2) -> Callable[[], Any]:
    sess = ort_session(path, threads)
    name = sess.get_inputs()[0].name
    return lambda: sess.run(None, {name: batch})


def side_by_side(path: Path, batch: np.ndarray) -> Callable[[], Any]:
    """Two 1-thread sessions, each running one batch at once: two batches per call (timed per batch below)."""
    runs = [ort_runner(path, batch, threads=1) for _ in range(2)]

    def both() -> None:
        workers = [threading.Thread(target=r) for r in runs]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return both


def openvino_runner(path: Path, batch: np.ndarray) -> Callable[[], Any]:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU")
    request = compiled.create_infer_request()
    return lambda: request.infer({0: batch})


def quantised(path: Path, kind: str, folder: Path) -> Path:
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    out = folder / f"rec-{kind}.onnx"
    if kind == "dynamic":
        quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        return out
    rng = np.random.default_rng(0)

    class Crops(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = 4

        def get_next(self) -> dict[str, np.ndarray] | None:
            if not self.left:
                return None
            self.left -= 1
            return {"x": (rng.random((1, 3, 48, 320), dtype=np.float32) - 0.5) * 2}

    quantize_static(str(path), str(out), Crops(), quant_format=QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv", "MatMul"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=1500, help="crop width at the model's 48 px height")
    ap.add_argument("--v4", type=Path, default=None, help="a PP-OCRv4 mobile recognition model (.onnx)")
    args = ap.parse_args(argv)
    path = rec_model()
    batch = np.random.default_rng(0).random((6, 3, 48, args.width), dtype=np.float32)
    print(f"# recognition of one batch of 6 crops 48x{args.width} ({path.name}); {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}")
    base = timed(ort_runner(path, batch, threads=2))
    rows: list[tuple[str, float | None, str]] = [("onnxruntime, 2 threads (baseline)", base, "")]
    rows.append(("onnxruntime, 1 thread", timed(ort_runner(path, batch, threads=1)), ""))
    rows.append(("two 1-thread sessions side by side, per batch", timed(side_by_side(path, batch)) / 2, ""))
    try:
        rows.append(("OpenVINO CPU", timed(openvino_runner(path, batch)), ""))
    except ImportError:
        rows.append(("OpenVINO CPU", None, "openvino is not installed"))
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("dynamic", "static"):
            label = {"dynamic": "int8 matrix products (dynamic)", "static": "int8 convolutions + matrix products"}[kind]
            try:
                rows.append((label, timed(ort_runner(quantised(path, kind, Path(tmp)), batch)), ""))
            except ImportError:
                rows.append((label, None, "onnx is not installed"))
    if args.v4 is not None:
        rows.append(("PP-OCRv4 mobile recognition", timed(ort_runner(args.v4, batch)), str(args.v4.name)))
    print(f"{'runtime':48} {'s per batch':>11} {'ratio':>6}")
    for label, seconds, why in rows:
        if seconds is None:
            print(f"{label:48} {'-':>11} {'-':>6}  {why}")
        else:
            print(f"{label:48} {seconds:11.3f} {seconds / base:6.2f}  {why}".rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

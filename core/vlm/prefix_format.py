"""The bytes of a prefix file (core.vlm.prefix_disk): its header, its checksum `sum64`, reads and host copies."""

from __future__ import annotations

import json
import os
import struct
from typing import Any

MAGIC = b"VLSKV2\n"
OLD_MAGIC = b"VLSKV1\n"


def _read_header(fd: int) -> tuple[dict[str, Any], int]:
    start = os.pread(fd, len(MAGIC) + 8, 0)
    if start[:len(OLD_MAGIC)] == OLD_MAGIC:
        raise ValueError("written by an older VLScope (sha256 checksums)")
    if len(start) < len(MAGIC) + 8 or start[:len(MAGIC)] != MAGIC:
        raise ValueError("not a VLScope prefix file")
    (n,) = struct.unpack("<Q", start[len(MAGIC):])
    if n > 16 << 20:
        raise ValueError("header too large")
    text = os.pread(fd, n, len(MAGIC) + 8)
    header = json.loads(text.decode("utf-8"))
    if not isinstance(header, dict) or not isinstance(header.get("tensors"), list):
        raise ValueError("not a prefix header")
    for x in header["tensors"]:
        if not (isinstance(x, dict) and isinstance(x.get("name"), str) and isinstance(x.get("shape"), list)
                and all(isinstance(d, int) and d >= 0 for d in x["shape"]) and isinstance(x.get("offset"), int)
                and isinstance(x.get("nbytes"), int) and isinstance(x.get("sum64"), str)):
            raise ValueError("a tensor entry of the header is not one")
    return header, len(MAGIC) + 8 + n


def _host_bytes(t: Any, stream: Any) -> memoryview:
    """The bytes of tensor `t` on the host (copied from the GPU on `stream`, off the model's stream)."""
    import torch

    if t.is_cuda:
        with torch.cuda.stream(stream):
            stream.wait_stream(torch.cuda.default_stream(t.device))
            host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            host.copy_(t.contiguous(), non_blocking=True)
        stream.synchronize()
    else:
        host = t.contiguous()
    return memoryview(host.view(torch.uint8).numpy()).cast("B")


_WEIGHTS: dict[str, Any] = {}
SUM_WORDS = 1 << 22
"""32-bit words summed per step of `sum64` (16 MiB)."""


def sum64(t: Any) -> str:
    """The checksum of a tensor's bytes, where the tensor is (16 hex digits): the sum over its 32-bit words w_i of
    w_i * (2 i + 1), modulo 2**64 (each step's int32 products wrap at 2**32 and are summed in int64, the steps
    weighted in turn), plus the length. A changed bit changes one product by 2**k times an odd number; a cut
    changes the length. Exact integer arithmetic: the same on the CPU and the GPU."""
    import torch

    flat = t.detach().contiguous().view(-1).view(torch.uint8)
    n = int(flat.numel())
    whole = n - n % 4
    words = flat[:whole].view(torch.int32)
    dev = str(words.device)
    weights = _WEIGHTS.get(dev)
    if weights is None:
        weights = _WEIGHTS[dev] = (torch.arange(SUM_WORDS, dtype=torch.int64, device=words.device) * 2 + 1).to(
            torch.int32)
    acc = 0
    for step, s0 in enumerate(range(0, int(words.numel()), SUM_WORDS)):
        w = words[s0:s0 + SUM_WORDS]
        acc += (2 * step + 1) * int((w * weights[:w.numel()]).sum(dtype=torch.int64))
    acc += sum((i + 1) * 0x9E3779B1 * int(b) for i, b in enumerate(flat[whole:].tolist())) + (n << 1)
    return f"{acc & ((1 << 64) - 1):016x}"


def _read_into(fd: int, buf: Any, at: int, name: str) -> None:
    """Read len(buf) bytes at `at` into the uint8 tensor `buf`; ValueError when the file is short."""
    n = int(buf.numel())
    got = os.preadv(fd, [memoryview(buf.numpy())], at)
    if got != n:
        raise ValueError(f"{name}: {got} of {n} bytes (the file is short)")

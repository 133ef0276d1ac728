"""Reading a kept prefix back from the disk tier (a restart's first answer), step by step, on the GPU machine.

Writes a prefix of the 4B's shape for the 10-minute video at the default plan (36 layers of K and V, 8 heads of 128,
50,000 tokens: 7.37 GB) with `PrefixDisk`, then times `PrefixDisk.load` beside its steps alone, each over the same
bytes with the same threads: pinned host buffers, reads from the page cache, checksums (sha256, format 1; sum64 on
the GPU, format 2), copies to the GPU. The first load of a process is what a restart pays.

    python3 benchmarks/prefix_read.py [--tokens 50000] [--folder /tmp/prefix-read]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch
    from transformers import DynamicCache

    from core.vlm import prefix_disk as P
    from core.vlm.prefix import Prefix, cache_nbytes

    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=50000)
    ap.add_argument("--layers", type=int, default=36)
    ap.add_argument("--folder", default="/tmp/prefix-read")
    args = ap.parse_args()
    dev = torch.device("cuda")
    kv = DynamicCache()
    for i in range(args.layers):
        kv.update(torch.randn(1, 8, args.tokens, 128, device=dev, dtype=torch.bfloat16),
                  torch.randn(1, 8, args.tokens, 128, device=dev, dtype=torch.bfloat16), i)
    ids = torch.zeros(1, args.tokens, dtype=torch.long, device=dev)
    key = hashlib.sha256(b"prefix-read").hexdigest()
    prefix = Prefix(key=key, input_ids=ids, mm_token_type_ids=None, grids={}, kv=kv, rope_deltas=None,
                    nbytes=cache_nbytes(kv), cache_kwarg="past_key_values")
    disk = P.PrefixDisk(args.folder, 64 << 30)
    disk.clear()
    t0 = time.perf_counter()
    assert disk.save_later(prefix)
    disk.wait()
    size = os.path.getsize(disk._path(key))
    print(f"{torch.cuda.get_device_name()}; {P.READERS} readers; wrote {size / 1e9:.2f} GB in "
          f"{time.perf_counter() - t0:.2f} s", flush=True)
    del prefix, kv
    torch.cuda.empty_cache()
    rows = []
    for attempt in range(3):
        t0 = time.perf_counter()
        got = disk.load(key, dev)
        torch.cuda.synchronize()
        rows.append((f"PrefixDisk.load, run {attempt + 1}", time.perf_counter() - t0))
        del got
        torch.cuda.empty_cache()
    fd = os.open(disk._path(key), os.O_RDONLY)
    header, base = P._read_header(fd)
    entries = header["tensors"]
    pool = ThreadPoolExecutor(max_workers=P.READERS)

    def timed(label, fn):
        t0 = time.perf_counter()
        out = list(pool.map(fn, entries))
        torch.cuda.synchronize()
        rows.append((label, time.perf_counter() - t0))
        return out

    timed("pinned buffers alone (torch.empty pin_memory)",
          lambda x: torch.empty(int(x["nbytes"]), dtype=torch.uint8, pin_memory=True))
    plain = timed("reads alone, into plain buffers", lambda x: _read(fd, base, x, torch.empty(
        int(x["nbytes"]), dtype=torch.uint8)))
    timed("sha256 alone (the checksum of format 1)",
          lambda x: hashlib.sha256(memoryview(plain[entries.index(x)].numpy())).hexdigest())
    pinned = timed("pinned buffers + reads", lambda x: _read(fd, base, x, torch.empty(
        int(x["nbytes"]), dtype=torch.uint8, pin_memory=True)))
    on_gpu = timed("copies to the GPU alone (from pinned)",
                   lambda x: pinned[entries.index(x)].to(dev, non_blocking=False))
    timed("sum64 on the GPU alone (the checksum of format 2)", lambda x: P.sum64(on_gpu[entries.index(x)]))
    one = torch.empty(sum(int(x["nbytes"]) for x in entries), dtype=torch.uint8, pin_memory=True)
    offsets = {x["name"]: int(x["offset"]) for x in entries}
    timed("reads into one pinned buffer made before", lambda x: _read(fd, base, x, one[
        offsets[x["name"]]:offsets[x["name"]] + int(x["nbytes"])]))
    os.close(fd)
    print(f"{'step (all tensors, ' + str(P.READERS) + ' threads)':58s} {'seconds':>8s} {'GB/s':>7s}")
    for label, s in rows:
        print(f"{label:58s} {s:8.3f} {size / s / 1e9:7.1f}")
    disk.clear()


def _read(fd: int, base: int, x: dict, buf) -> object:
    got = os.preadv(fd, [memoryview(buf.numpy())], base + int(x["offset"]))
    assert got == int(x["nbytes"])
    return buf


if __name__ == "__main__":
    main()

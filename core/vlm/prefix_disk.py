"""Kept prefixes on disk: the tier a restart finds.

The GPU and host-RAM tiers (`core.vlm.prefix.PrefixStore`) end with the process. A video's prefix (its KV cache
after the visual input: 6.9 GB for the 10-minute video at the default plan on the 4B) is also written here, so a
restarted process, or another one on the same machine (dashboard, CLI, API), reads it back instead of prefilling
the language model again. Only what a prefill costs enough to be worth it is kept (`min_bytes`).

One file per prefix in `folder`, `<key>.kv` (the key is the prefix's sha256: model, precision, prompt text and the
visual input's cache key): ``VLSKV2\\n``, the header's length (8 bytes, little endian), a JSON header naming each
tensor (dtype, shape, offset, `sum64`), then the tensors' raw bytes. `sum64` is a position-weighted sum of the
tensor's 32-bit words modulo 2**64 (`sum64`): any changed bit, swapped words or cut file changes it, and it is
computed where the tensor is (on the GPU in a few milliseconds; sha256 of a 7.4 GB prefix took 0.45 s of 16 CPU
cores). A read goes through a few pinned staging buffers made once (`prepare`): pinning 7.4 GB afresh on every
restart took 1.2 s of the 1.6 s read on the H200 (benchmarks/prefix_read.py). A layer is its K and V (`k3`, `v3`), or for
Qwen3.5's linear-attention layers its convolution and recurrent states (`c0`, `r0`): fixed-size, whatever the
prompt length. Never pickle. A file is written by a
background thread under a temporary name and renamed when complete; files over `limit_bytes` go least recently
used first; a file that is damaged (short, a checksum that does not match, a header that is not one) is a reported
miss and is removed, and the prefix is computed again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.vlm.prefix_format import (  # noqa: F401 - the format's names, here too
    MAGIC, OLD_MAGIC, SUM_WORDS, _host_bytes, _read_header, _read_into, sum64)

log = logging.getLogger(__name__)

STAGE_BYTES = 32 << 20
"""Bytes of each pinned staging buffer (one per reader)."""
READERS = max(2, min(16, os.cpu_count() or 2))
"""Threads reading (and checking) a prefix file's tensors at once."""
_KEY = re.compile(r"^[0-9a-f]{64}$")
_DTYPES = ("bfloat16", "float16", "float32", "int64", "int32")


@dataclass
class DiskReport:
    """The disk tier for the GPU page and /info."""

    folder: str
    entries: int
    bytes: int
    limit_bytes: int


_LINEAR_FIELDS = {"number_of_states", "conv_states", "recurrent_states", "is_conv_states_initialized",
                  "is_recurrent_states_initialized", "has_previous_state", "conv_kernel_size", "device", "dtype",
                  "record_past", "cumulative_length_linear"}  # the last: transformers 5.25+, the tokens seen


def _is_linear(layer: Any) -> bool:
    """A linear-attention (Gated DeltaNet) layer's cache as this file holds it: one conv and one recurrent state."""
    return (type(layer).__name__ == "LinearAttentionLayer" and not set(vars(layer)) - _LINEAR_FIELDS
            and getattr(layer, "number_of_states", 0) == 1 and not getattr(layer, "record_past", False)
            and all(getattr(layer, f, {}).get(0) is not None for f in ("conv_states", "recurrent_states")))


def _names_of(prefix: Any) -> list[str] | None:
    """The names of everything a prefix needs (`_tensor`), or None when its cache holds what this file does not: per
    layer K/V (`k3`, `v3`) or, for Qwen3.5's linear-attention layers, their convolution and recurrent states (`c0`,
    `r0`); any other kind of layer or cache is not written."""
    kv = prefix.kv
    layers = getattr(kv, "layers", None)
    if not layers or type(kv).__name__ != "DynamicCache":
        return None
    names: list[str] = []
    for i, layer in enumerate(layers):
        if _is_linear(layer):
            names += [f"c{i}", f"r{i}"]
            continue
        if getattr(layer, "keys", None) is None or getattr(layer, "values", None) is None or \
                set(vars(layer)) - {"keys", "values", "is_initialized", "dtype", "device"}:
            return None
        names += [f"k{i}", f"v{i}"]
    names.append("input_ids")
    if prefix.mm_token_type_ids is not None:
        names.append("mm_token_type_ids")
    if prefix.rope_deltas is not None:
        names.append("rope_deltas")
    return names + [f"grid:{name}" for name in prefix.grids]


def _tensor(prefix: Any, name: str) -> Any:
    """The tensor called `name` of `prefix`, looked up when asked: a kept cache's layers move (into the decoder's
    static cache) and a reference held here must not keep the old ones alive."""
    if name[0] in "kv" and name[1:].isdigit():
        layer = prefix.kv.layers[int(name[1:])]
        return layer.keys if name[0] == "k" else layer.values
    if name[0] in "cr" and name[1:].isdigit():
        layer = prefix.kv.layers[int(name[1:])]
        return (layer.conv_states if name[0] == "c" else layer.recurrent_states)[0]
    if name.startswith("grid:"):
        return prefix.grids[name[5:]]
    return getattr(prefix, name)


class PrefixDisk:
    """Prefix KV caches in files under `folder`, at most `limit_bytes` of them (least recently used out)."""

    def __init__(self, folder: str | os.PathLike[str], limit_bytes: int, min_bytes: int = 64 << 20) -> None:
        self.folder = Path(folder)
        self.limit_bytes = max(0, int(limit_bytes))
        self.min_bytes = int(min_bytes)
        self.problems: list[str] = []
        self._writing: dict[str, threading.Thread] = {}
        self._guard = threading.Lock()
        self.last_load_s: float | None = None
        self.gpu_gate: Any = None
        """Held around each copy between the GPU and the host (the engine's model lock): never while the model runs,
        so a copy cannot meet a CUDA graph being captured."""
        self._staging: queue.Queue[Any] | None = None

    def prepare(self, device: Any) -> None:
        """Pin the staging buffers reads go through (READERS of STAGE_BYTES), when `device` is a GPU: once, at the
        engine's load, so that a restart's first answer does not pin memory."""
        import torch

        if self._staging is not None or not str(device).startswith("cuda"):
            return
        staging: queue.Queue[Any] = queue.Queue()
        for _ in range(READERS):
            staging.put(torch.empty(STAGE_BYTES, dtype=torch.uint8, pin_memory=True))
        self._staging = staging

    # -- files ---------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"not a prefix key: {key!r}")
        return self.folder / f"{key}.kv"

    def _files(self) -> list[Path]:
        try:
            return [p for p in self.folder.iterdir() if p.suffix == ".kv" and _KEY.match(p.stem)]
        except OSError:
            return []

    def contains(self, key: str) -> bool:
        return _KEY.match(key) is not None and self._path(key).is_file()

    def report(self) -> DiskReport:
        files = self._files()
        return DiskReport(str(self.folder), len(files), sum(_size(p) for p in files), self.limit_bytes)

    # -- writing -------------------------------------------------------------------------------
    def save_later(self, prefix: Any) -> bool:
        """Write `prefix` in a background thread when it is big enough and not on disk yet; returns whether it will."""
        if self.limit_bytes <= 0 or prefix.nbytes < self.min_bytes or prefix.nbytes > self.limit_bytes:
            return False
        if not _KEY.match(prefix.key) or self.contains(prefix.key):
            return False
        names = _names_of(prefix)
        if names is None:
            return False
        with self._guard:
            if prefix.key in self._writing:
                return False
            thread = threading.Thread(target=self._write, args=(prefix, names),
                                      name="vlscope-prefix-save", daemon=True)
            self._writing[prefix.key] = thread
        thread.start()
        return True

    def wait(self) -> None:
        """Until every pending write is on disk."""
        with self._guard:
            threads = list(self._writing.values())
        for t in threads:
            t.join()

    def _write(self, prefix: Any, names: list[str]) -> None:
        import torch

        key = prefix.key
        tmp = self.folder / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            entries, offset, device = [], 0, None
            for name in names:
                t = _tensor(prefix, name)
                n = t.numel() * t.element_size()
                entries.append({"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                                "offset": offset, "nbytes": n, "sum64": "0" * 16})
                offset += n
                device = device if device is not None else t.device
                del t
            self._make_room(offset)
            header: dict[str, Any] = {"key": key, "cache_kwarg": prefix.cache_kwarg, "tensors": entries}
            head_len = len(json.dumps(header).encode("utf-8"))  # the checksums' placeholders are as long as they
            side = torch.cuda.Stream(device) if device is not None and device.type == "cuda" else None
            with open(tmp, "wb") as f:
                f.write(b"\0" * (len(MAGIC) + 8 + head_len))
                for x in entries:
                    with self.gpu_gate or contextlib.nullcontext():
                        t = _tensor(prefix, x["name"])
                        x["sum64"] = sum64(t)
                        data = _host_bytes(t, side)
                        del t
                    f.write(data)
                    del data
                text = json.dumps(header).encode("utf-8")
                if len(text) != head_len:
                    raise ValueError("the header changed length")
                f.seek(0)
                f.write(MAGIC + struct.pack("<Q", head_len) + text)  # written last: the file is whole once named
            os.replace(tmp, self._path(key))
        except Exception as exc:  # noqa: BLE001 - the disk tier is a saving, never the answer
            log.warning("the prefix %s was not written to disk: %s", key[:12], exc)
            self.problems.append(f"prefix not written: {exc}")
            try:
                tmp.unlink()
            except OSError:
                pass
        finally:
            with self._guard:
                self._writing.pop(key, None)

    def _make_room(self, need: int) -> None:
        files = sorted(self._files(), key=_used)
        total = sum(_size(p) for p in files)
        for p in files:
            if total + need <= self.limit_bytes:
                break
            total -= _size(p)
            try:
                p.unlink()
            except OSError:
                pass

    # -- reading -------------------------------------------------------------------------------
    def load(self, key: str, device: Any) -> Any | None:
        """The prefix stored under `key` with its tensors on `device`, or None (not there, or damaged: reported and
        removed)."""
        from core.vlm.prefix import Prefix, cache_nbytes

        if not _KEY.match(key):
            return None
        path = self._path(key)
        t0 = time.perf_counter()
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._damaged(path, f"unreadable: {exc}")
            return None
        try:
            os.utime(path)  # least recently used goes first
            header, base = _read_header(fd)
            tensors = self._read_tensors(fd, header, base, device)
        except Exception as exc:  # noqa: BLE001 - any damage is a reported miss
            if type(exc).__name__ == "OutOfMemoryError":
                log.warning("no room on the device for the stored prefix %s; computing it again", key[:12])
                return None
            self._damaged(path, str(exc))
            return None
        finally:
            os.close(fd)
        kv = _cache_of(tensors)
        grids = {name.split(":", 1)[1]: t for name, t in tensors.items() if name.startswith("grid:")}
        prefix = Prefix(key=key, input_ids=tensors["input_ids"], mm_token_type_ids=tensors.get("mm_token_type_ids"),
                        grids=grids, kv=kv, rope_deltas=tensors.get("rope_deltas"), nbytes=cache_nbytes(kv),
                        cache_kwarg=str(header.get("cache_kwarg") or "past_key_values"))
        self.last_load_s = time.perf_counter() - t0
        return prefix

    def _read_tensors(self, fd: int, header: dict[str, Any], base: int, device: Any) -> dict[str, Any]:
        import torch

        entries = header["tensors"]
        on_cuda = str(device).startswith("cuda")
        gate = self.gpu_gate or contextlib.nullcontext()
        if on_cuda:
            self.prepare(device)

        def one(x: dict[str, Any]) -> tuple[str, Any]:
            if x["dtype"] not in _DTYPES:
                raise ValueError(f"unknown dtype {x['dtype']!r}")
            dtype = getattr(torch, x["dtype"])
            n, at = int(x["nbytes"]), base + int(x["offset"])
            if not on_cuda:
                host = torch.empty(n, dtype=torch.uint8)
                _read_into(fd, host, at, x["name"])
                t = host.view(dtype).view(x["shape"])
                if str(device) not in ("cpu", "None"):
                    t = t.to(device)
            else:  # through a pinned staging buffer, a piece at a time; copied on this thread's stream
                assert self._staging is not None
                buf = self._staging.get()
                try:
                    with gate:  # allocated on the model's stream
                        dst = torch.empty(n, dtype=torch.uint8, device=device)
                        stream = torch.cuda.Stream(device)
                        stream.wait_stream(torch.cuda.current_stream(device))
                    for off in range(0, n, STAGE_BYTES):
                        m = min(STAGE_BYTES, n - off)
                        _read_into(fd, buf[:m], at + off, x["name"])
                        with gate:
                            with torch.cuda.stream(stream):
                                dst[off:off + m].copy_(buf[:m], non_blocking=True)
                            stream.synchronize()
                finally:
                    self._staging.put(buf)
                t = dst.view(dtype).view(x["shape"])
            with gate:
                if sum64(t) != x.get("sum64"):
                    raise ValueError(f"{x['name']}: checksum mismatch (the file was changed or cut)")
            return x["name"], t

        with ThreadPoolExecutor(max_workers=min(READERS, len(entries))) as pool:
            return dict(pool.map(one, entries))

    def _damaged(self, path: Path, why: str) -> None:
        text = f"stored prefix {path.name} is damaged ({why}); it was removed and is computed again"
        log.warning("%s", text)
        self.problems.append(text)
        try:
            path.unlink()
        except OSError:
            pass

    def clear(self) -> int:
        n = 0
        for p in self._files():
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
        return n


def _cache_of(tensors: dict[str, Any]) -> Any:
    """The DynamicCache of a file's layer tensors (taken out of `tensors`): K/V layers, and linear-attention layers
    with their convolution and recurrent states, in layer order."""
    from transformers import DynamicCache

    kv = DynamicCache()
    tokens = int(tensors["input_ids"].shape[-1]) if "input_ids" in tensors else 0
    layer = 0
    while f"k{layer}" in tensors or f"c{layer}" in tensors:
        if f"k{layer}" in tensors:
            kv.update(tensors.pop(f"k{layer}"), tensors.pop(f"v{layer}"), layer)
        else:
            from transformers.cache_utils import LinearAttentionLayer

            conv, rec = tensors.pop(f"c{layer}"), tensors.pop(f"r{layer}")
            state = LinearAttentionLayer()
            state.lazy_initialization(conv_states=conv, recurrent_states=rec)
            state.conv_states[0], state.recurrent_states[0] = conv, rec  # the read tensors themselves, no copy
            state.has_previous_state[0] = True  # the next forward continues after the prefix
            seen = getattr(state, "cumulative_length_linear", None)  # transformers 5.25+: the cache's length for
            if seen is not None:  # a layer-0 linear layer; at 0 the question would be placed at position 0
                seen.fill_(tokens)
            kv.layers.append(state)
        layer += 1
    return kv


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def _used(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0

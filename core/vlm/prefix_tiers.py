"""Sizes of the two tiers of kept prefixes (GPU and pinned host RAM), from the memory left after the weights.

Kept beside core.vlm.prefix, which re-exports these names."""

from __future__ import annotations

from typing import NamedTuple

from core.settings import Settings

GIB = 1024**3
RESERVE_FLOOR = 4 * GIB
RESERVE_SHARE = 0.20
"""GPU working reserve beside the GPU tier: max(4 GiB, 20% of the card). The largest prefill of the default video
plan (768 frames at the per-frame pixel floor: ~54k prompt tokens) needs, by core.media.budget's estimate, ~13 GB
of activations + 8 GB of static decode cache on the 4B (18 + 8 GB on the 8B): 20% of an H200 (28 GiB) covers
both. 4 GiB is the floor of small cards, where such a prefill does not fit anyway (the planner warns)."""
HOST_SHARE = 0.5
HOST_FLOOR = 4 * GIB
"""The host tier: half of the RAM available after loading (heavy work may take the other half, see core.limits)
minus 4 GiB left for the rest of the process. Pinned RAM cannot be swapped out, so it stays well below all."""


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _size(n: int) -> str:
    return _gib(n) if n >= GIB else f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{n / 1024:.1f} KiB"


class TierPlan(NamedTuple):
    """Sizes of the two tiers of kept prefixes, and how they were chosen (for people)."""

    gpu_limit: int
    host_limit: int
    reason: str


def plan_prefix_tiers(free_gpu_bytes: int | None, total_gpu_bytes: int | None, weights_bytes: int,
                      available_ram_bytes: int, settings: Settings) -> TierPlan:
    """Tier sizes from the memory free after loading the weights; `total_gpu_bytes` None/0 means a CPU engine
    (one tier, in RAM). `prefix_gpu_gb` / `prefix_host_gb` override the automatic sizes; `prefix_cache_gb`
    caps both together (0 turns reuse off)."""
    cap = int(settings.prefix_cache_gb * GIB)
    if cap <= 0:
        return TierPlan(0, 0, "Prefix reuse is off (setting prefix_cache_gb is 0).")
    ram = max(0, int(available_ram_bytes * HOST_SHARE) - HOST_FLOOR)
    ram_why = f"half of the {_gib(available_ram_bytes)} of RAM available, minus {_gib(HOST_FLOOR)}"
    if not total_gpu_bytes:
        gpu, gpu_why = ram, ram_why
        if settings.prefix_gpu_gb is not None:
            gpu, gpu_why = int(settings.prefix_gpu_gb * GIB), "setting prefix_gpu_gb"
        return TierPlan(min(gpu, cap), 0, f"One tier in RAM (CPU engine): {_gib(min(gpu, cap))} ({gpu_why}"
                        + (", capped by prefix_cache_gb" if gpu > cap else "") + "); no host tier.")
    free = min(int(free_gpu_bytes or 0), total_gpu_bytes - weights_bytes)
    reserve = max(RESERVE_FLOOR, int(total_gpu_bytes * RESERVE_SHARE))
    gpu = max(0, free - reserve)
    gpu_why = (f"{_gib(free)} free after {_gib(weights_bytes)} of weights, minus a {_gib(reserve)} working reserve: "
               f"max({_gib(RESERVE_FLOOR)}, {RESERVE_SHARE:.0%} of the {_gib(total_gpu_bytes)} card)")
    if settings.prefix_gpu_gb is not None:
        auto, gpu = gpu, int(settings.prefix_gpu_gb * GIB)
        gpu_why = "setting prefix_gpu_gb" + (f"; above the {_gib(auto)} free beside the working reserve, so "
                                             "large requests may run out of memory" if gpu > auto else "")
    host, host_why = ram, ram_why
    if settings.prefix_host_gb is not None:
        host, host_why = int(settings.prefix_host_gb * GIB), "setting prefix_host_gb"
    capped = gpu + host > cap
    gpu = min(gpu, cap)
    host = min(host, cap - gpu)
    return TierPlan(gpu, host, f"GPU tier {_gib(gpu)} ({gpu_why}); host tier {_gib(host)} of pinned RAM ({host_why})"
                    + (f"; both capped at prefix_cache_gb = {_gib(cap)} together." if capped else "."))

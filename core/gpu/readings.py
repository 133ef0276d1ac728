"""Typed readings of the GPUs (through NVML) and of the host (CPU and RAM, through psutil).

Every reading is a dataclass that serialises to JSON (`to_dict`, `to_json`). A field that the
card or driver does not report (power on some MIG slices, a clock on a virtual GPU) is None,
never a made-up zero.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class GpuProcess:
    """A process holding memory on a GPU."""

    pid: int
    name: str
    used_memory_bytes: int | None  # None when the driver does not say (e.g. inside some containers)
    kind: str = "compute"  # "compute" or "graphics"


@dataclass
class GpuReading:
    """One GPU at one moment."""

    index: int
    name: str
    uuid: str
    utilization_percent: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    temperature_c: float | None
    power_draw_w: float | None
    power_limit_w: float | None
    sm_clock_mhz: int | None
    memory_clock_mhz: int | None
    processes: list[GpuProcess] = field(default_factory=list)

    @property
    def memory_percent(self) -> float | None:
        """Memory used as a percentage of the card's memory (None when unknown)."""
        if self.memory_used_bytes is None or not self.memory_total_bytes:
            return None
        return 100.0 * self.memory_used_bytes / self.memory_total_bytes


@dataclass
class HostReading:
    """This machine's CPU and RAM at one moment, plus the memory of this process (the app and its model)."""

    cpu_percent: float  # all cores together, 0..100
    per_cpu_percent: list[float]
    cpu_count: int
    memory_used_bytes: int
    memory_total_bytes: int
    memory_percent: float
    process_rss_bytes: int


@dataclass
class Snapshot:
    """Everything the GPU monitor shows at one moment.

    `available` is False when no NVIDIA GPU can be read; `reason` then says why in words a user
    understands (no driver, driver not loaded, no GPU, nvidia-ml-py missing) and `gpus` is empty.
    `host` is always filled.
    """

    taken_at: float  # seconds since the epoch
    available: bool
    reason: str
    gpus: list[GpuReading]
    host: HostReading
    driver_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Snapshot":
        """The inverse of `to_dict` (for snapshots saved as JSON)."""
        gpus = [
            GpuReading(**{**g, "processes": [GpuProcess(**p) for p in g.get("processes", [])]})
            for g in data.get("gpus", [])
        ]
        return cls(
            taken_at=data["taken_at"],
            available=data["available"],
            reason=data["reason"],
            gpus=gpus,
            host=HostReading(**data["host"]),
            driver_version=data.get("driver_version"),
        )

"""The identity of a speech checkpoint's files, part of the cache keys of what it heard."""

from __future__ import annotations

import hashlib
from pathlib import Path


def weights_fingerprint(path: Path) -> str:
    """A short digest of a checkpoint's identity: its config files and, for each weights file, its size and first
    and last MiB (cheap; a retrained model in the same folder gets another digest, so old results miss)."""
    digest = hashlib.sha256()
    for name in ("config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json"):
        f = path / name
        if f.is_file():
            digest.update(name.encode() + f.read_bytes())
    for f in sorted(path.glob("*.safetensors")):
        size = f.stat().st_size
        digest.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), 2)
                digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]

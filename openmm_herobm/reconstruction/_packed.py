"""Arrays with a JSON header as one in-memory ``.npz``: how a model file carries a library (the
side chains, the lipid frames), read back without pickle."""

from __future__ import annotations

import io
import json

import numpy as np


def pack(meta: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """``meta`` (with its ``format``) and ``arrays`` as compressed ``.npz`` bytes."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    return buffer.getvalue()


def unpack(data: bytes, fmt: str, what: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) of :func:`pack` bytes; ValueError unless ``meta["format"]`` is ``fmt``."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        if meta.get("format") != fmt:
            raise ValueError(f"unknown {what} format {meta.get('format')!r}")
        return meta, {k: z[k] for k in z.files if k != "meta"}

"""What every benchmark script here writes: its JSON result, with the command and the date."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def write_result(path: Path | None, **payload) -> None:
    """``{"command", "date", **payload}`` as JSON at ``path`` (folders made; nothing when None)."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), **payload}
    path.write_text(json.dumps(record, indent=1, default=float) + "\n")

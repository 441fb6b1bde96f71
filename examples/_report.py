"""What a run tells: rank 0's log (screen and ``train.log``), per-epoch lines, ``results.json`` and the file list."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

from _distributed import Dist
from torch import Tensor

from longtail_losses import metrics


class RunLog:
    """Rank 0's messages: printed (above a progress bar, if one is shown) and appended to ``path``.

    Every line in the file starts with a timestamp, so that a log of a long run reads on its own.
    """

    def __init__(self, path: Optional[Path], d: Dist) -> None:
        self.path = path
        self.enabled = d.is_main

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        try:
            from tqdm.auto import tqdm

            tqdm.write(message, file=sys.stdout)
        except ImportError:
            print(message, flush=True)
        sys.stdout.flush()
        if self.path is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with open(self.path, "a", encoding="utf-8") as f:
                for line in message.splitlines():
                    f.write(f"{stamp} {line}\n")


def format_duration(seconds: float) -> str:
    """``3725.2`` -> ``'1:02:05'``; under a minute ``'12.3 s'``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def epoch_line(
    stage: str, epoch: int, epochs: int, loss: float, lr: float, seconds: float, eta: float, acc: Optional[str] = None
) -> str:
    """One log line per epoch: ``stage1 epoch  3/20 | loss 2.3026 | lr 9.51e-03 | 1.2 s | ETA 21.6 s``."""
    width = len(str(epochs))
    parts = [f"{stage} epoch {epoch:>{width}}/{epochs}", f"loss {loss:.4f}", f"lr {lr:.2e}"]
    if acc:
        parts.append(acc)
    parts += [format_duration(seconds), f"ETA {format_duration(eta)}"]
    return " | ".join(parts)


def clean(value: Any) -> Any:
    """Make ``value`` strict JSON: nan/inf -> None, tensors -> lists, paths -> str."""
    if isinstance(value, Tensor):
        return clean(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def written_files(out: Path) -> list[str]:
    """``name (size)`` of every file in ``out``, for the list printed at the end of a run."""
    rows = []
    for path in sorted(out.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            size = path.stat().st_size
            unit = next(u for u, limit in (("B", 1 << 10), ("KiB", 1 << 20), ("MiB", 1 << 30), ("GiB", 1 << 62))
                        if size < limit)  # fmt: skip
            scaled = size / {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[unit]
            rows.append(f"{path} ({scaled:.0f} {unit})" if unit == "B" else f"{path} ({scaled:.1f} {unit})")
    return rows


def write_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as strict JSON (see :func:`clean`), atomically: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(clean(obj), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def acc_text(split: str, r: dict[str, Any], *, full: bool = False) -> str:
    """``val all 45.2%`` or, with ``full``, ``test many 70.1% | medium 40.3% | few 10.0% | all 41.2%``."""

    def pct(v: Optional[float]) -> str:
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"

    if not full:
        return f"{split} all {pct(r['all'])}"
    return f"{split} " + " | ".join(f"{k} {pct(r[k])}" for k in metrics.SHOT_KEYS)


def nan_rows(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Many/Medium/Few/All of each row with ``None`` (an empty group) as nan, for the printed table."""
    return {n: {k: math.nan if r[k] is None else r[k] for k in metrics.SHOT_KEYS} for n, r in rows.items()}

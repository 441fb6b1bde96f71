"""Checkpoints and stage-1 weights: atomic saves, the fingerprint check of ``--stage1-weights``, input errors."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from _distributed import Dist
from _report import clean
from torch import Tensor, nn


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: Path, d: Dist) -> Any:
    """``torch.load`` onto this process's device, tensors and plain containers only."""
    return torch.load(path, map_location=d.device, weights_only=True)


class InputError(ValueError):
    """A missing or mismatched input found before training, worded in the script's flags (exit status 2)."""


def save_stage1(model: nn.Module, path: Path, fingerprint: dict[str, Any]) -> None:
    """Write ``stage1_model.pt``: ``{"model": state_dict, "fingerprint": ...}`` (data set, IF, seeds, counts)."""
    save_atomic({"model": model.state_dict(), "fingerprint": clean(fingerprint)}, path)


def load_stage1(path: Path, d: Dist, fingerprint: dict[str, Any]) -> dict[str, Tensor]:
    """The state dict of a ``stage1_model.pt``, after checking that its fingerprint matches this run's.

    Raises:
        InputError: If the fingerprints differ (another data set, IF, data seed, seed or class counts).
    """
    payload = load(path, d)
    if not (isinstance(payload, dict) and "model" in payload and "fingerprint" in payload):
        print(
            f"warning: {path} has no fingerprint (written by an older version): cannot check that it comes from a "
            "run with the same data and seed",
            file=sys.stderr,
            flush=True,
        )
        return payload
    theirs, ours = payload["fingerprint"], clean(fingerprint)
    diff = [k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
    if diff:

        def show(v: Any) -> str:
            text = json.dumps(v)
            return text if len(text) <= 40 else text[:37] + "..."

        details = "; ".join(f"{k}: {show(theirs.get(k))} there, {show(ours.get(k))} here" for k in diff)
        raise InputError(
            f"Expected --stage1-weights {path} to come from a run with the same data and seed, but it differs in "
            f"{details}. Train stage 1 with these settings (drop --stage1-weights), or pass the flags of that run."
        )
    return payload["model"]


def check_output_folder(out: Path, d: Dist) -> None:
    """Create ``--output`` and check that this process can write there, before anything is trained."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{d.rank}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise InputError(
            f"Expected --output {out} to be a folder this process can write, but {err.strerror or err}"
            f"{f' ({err.filename})' if err.filename else ''}"
        ) from None


class StopRun(Exception):
    """Raised by ``--stop-after`` to end a run after a checkpoint, as a crash would."""


def state_of(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of ``model``'s state dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}

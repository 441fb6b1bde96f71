"""A tiny long-tailed image folder (``root/<class>/<i>.png``), the layout both reference scripts read."""

from __future__ import annotations

from pathlib import Path

import torch


def write_image_folder(root: Path, counts: list[int], size: int = 32, seed: int = 0) -> Path:
    """``counts[c]`` random RGB images of ``size`` x ``size`` pixels in ``root/class<c>/``; returns ``root``."""
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    for c, n in enumerate(counts):
        folder = Path(root) / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = torch.randint(0, 256, (size, size, 3), generator=gen, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return Path(root)

"""ImageNet-LT: the split files of Liu et al. (fabricated, and the real ones when present) over an image folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import longtail_losses as ltl
from longtail_losses import data as D
from tests._fabricate import (
    label_grey,
    make_fake_imagenet_lt,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _shared_imagenet_lt_dir() -> Path:
    env = os.environ.get("LTL_IMAGENET_LT_SPLITS")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "imagenet_lt"


class TestImagenetLT:
    def test_fabricated_folder(self, tmp_path):
        counts = [6, 3, 1]
        splits = make_fake_imagenet_lt(tmp_path, counts, per_class_eval=2, image_size=8)
        ds = D.imagenet_lt(tmp_path, splits["train"])
        assert len(ds) == 10
        assert_close(ds.class_counts, torch.tensor(counts))
        assert_close(ltl.class_counts(ds), torch.tensor(counts))
        path, label = ds.samples[7]
        assert Path(path).is_file()
        assert label == ds.targets[7] == 1
        img, y = ds[7]
        assert img.mode == "RGB"
        assert img.size == (8, 8)
        assert y == 1
        # JPEG is lossy, but a solid grey survives within a couple of levels
        assert np.abs(np.asarray(img).astype(int) - label_grey(1)).max() <= 2
        test = D.imagenet_lt(tmp_path, splits["test"], transform=lambda im: np.asarray(im).mean())
        assert_close(test.class_counts, torch.tensor([2, 2, 2]))
        value, y = test[5]
        assert abs(value - label_grey(2)) <= 2
        assert y == 2

    def test_num_classes(self, tmp_path):
        split = tmp_path / "s.txt"
        split.write_text("a/b.JPEG 1\n\n")
        assert D.imagenet_lt(tmp_path, split, num_classes=4).class_counts.tolist() == [0, 1, 0, 0]
        with pytest.raises(ValueError, match="< num_classes=1, but got 1"):
            D.imagenet_lt(tmp_path, split, num_classes=1)

    def test_malformed_line(self, tmp_path):
        split = tmp_path / "bad.txt"
        split.write_text("train/a/x.JPEG 0\ntrain/a/y.JPEG\n")
        with pytest.raises(ValueError, match=r"'train/a/y.JPEG' at .*bad.txt:2"):
            D.imagenet_lt(tmp_path, split)
        split.write_text("train/a/x.JPEG zero\n")
        with pytest.raises(ValueError, match=r"bad.txt:1"):
            D.imagenet_lt(tmp_path, split)
        split.write_text("\n")
        with pytest.raises(ValueError, match="at least one"):
            D.imagenet_lt(tmp_path, split)

    def test_missing(self, tmp_path):
        with pytest.raises(FileNotFoundError, match=r"split file not found.*OLTR"):
            D.imagenet_lt(tmp_path, tmp_path / "ImageNet_LT_train.txt")
        split = tmp_path / "s.txt"
        split.write_text("a 0\n")
        with pytest.raises(FileNotFoundError, match="is not a folder"):
            D.imagenet_lt(tmp_path / "nope", split)

    @pytest.mark.parametrize(("split", "per_class"), [("test", 50), ("val", 20)])
    def test_shared_split_files(self, split, per_class, tmp_path):
        path = _shared_imagenet_lt_dir() / f"ImageNet_LT_{split}.txt"
        if not path.is_file():
            pytest.skip(f"{path} is absent (set LTL_IMAGENET_LT_SPLITS to the folder of the ImageNet-LT split lists)")
        ds = D.imagenet_lt(tmp_path, path)
        assert len(ds) == 1000 * per_class
        assert_close(ds.class_counts, torch.full((1000,), per_class))
        assert ds.samples[0][0].startswith(str(tmp_path))

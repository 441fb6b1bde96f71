"""The reference examples end to end on fabricated data, on the CPU: outputs, DDP equivalence, resume, demo."""

from __future__ import annotations

import copy
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tests._fabricate import make_fake_cifar100, make_fake_imagenet_lt

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")


def _import(name: str):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


@pytest.fixture(autouse=True)
def _isolated_torch_state():
    # The scripts set threads and deterministic mode globally; restore them for the other tests.
    threads = torch.get_num_threads()
    det, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.get_rng_state()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and 2-core CI machines are shared
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det, warn_only=warn_only)
    torch.set_rng_state(rng)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 10 classes of 6 training images; IF = 6 gives counts 6, 4, 4, 3, 2, 2, 1, 1, 1, 1.
    return make_fake_cifar100(tmp_path_factory.mktemp("cifar"), per_class_train=6, per_class_test=2, num_classes=10)


def _cifar_args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data", str(root), "--imbalance-factor", "6", "--batch-size", "8", "--epochs", "2",
        "--stage2-epochs", "2", "--no-progress", "--device", "cpu", "--output", str(out), *extra,
    ]  # fmt: skip


def _check_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    assert img.ndim == 3
    assert img.shape[0] > 200
    assert img.shape[1] > 400


def _check_results(out: Path, stages: list[str], num_classes: int, splits: tuple[str, ...] = ("test",)) -> dict:
    results = json.loads((out / "results.json").read_text())
    for key in ("config", "environment", "data", "stages", "wall_time_s", "final", "plots"):
        assert key in results
    assert sorted(results["stages"]) == sorted(stages)
    for name in stages:
        stage = results["stages"][name]
        for split in splits:
            assert set(stage[split]) == {"many", "medium", "few", "all", "per_class_accuracy"}
            assert len(stage[split]["per_class_accuracy"]) == num_classes
            assert 0.0 <= stage[split]["all"] <= 1.0
        assert len(stage["weight_norms"]) == num_classes
        assert all(n > 0 for n in stage["weight_norms"])
        assert len(stage["loss_history"]) == stage["epochs"]
    assert results["wall_time_s"]["total"] > 0
    assert results["data"]["num_classes"] == num_classes
    for name in ("per_class_accuracy.png", "weight_norms.png"):
        _check_png(out / name)
    return results


@pytest.mark.slow
def test_cifar_two_stage_end_to_end(cifar_root: Path, tmp_path: Path) -> None:
    script = _import("reproduce_cifar_lt")
    out = tmp_path / "bwlm"
    assert script.main(_cifar_args(cifar_root, out, "--row", "BWLM")) == 0
    results = _check_results(out, ["stage1", "stage2"], 10)
    assert results["config"]["loss"] == "bwlm"
    assert results["config"]["weight_decay"] == 5e-3
    assert results["data"]["train_counts"] == [6, 4, 4, 3, 2, 2, 1, 1, 1, 1]
    # Data balanced review: head = the 5 largest classes; stage 2 cuts them to n_{m+1} = 2.
    assert results["data"]["stage1_size"] == 6 + 4 + 4 + 3 + 2
    assert results["data"]["stage2_counts"] == [2, 2, 2, 2, 2, 2, 1, 1, 1, 1]
    assert results["stages"]["stage2"]["cached_features"] is True
    assert (out / "stage1_model.pt").is_file()
    assert (out / "checkpoint.pt").is_file()
    # Stage 2 changed only the classifier: the backbone equals the stage-1 model's, BatchNorm buffers included.
    saved = torch.load(out / "stage1_model.pt", weights_only=True)
    assert saved["fingerprint"] == {
        "dataset": "cifar100", "imbalance_factor": 6.0, "data_seed": 0, "max_count": None, "seed": 0,
        "class_counts": [6, 4, 4, 3, 2, 2, 1, 1, 1, 1],
    }  # fmt: skip
    stage1 = saved["model"]
    final = torch.load(out / "final_model.pt", weights_only=True)
    for key, value in stage1.items():
        if not key.startswith("fc."):
            torch.testing.assert_close(final[key], value, rtol=0, atol=0)
    assert not torch.equal(final["fc.weight"], stage1["fc.weight"])
    # One persistent line per epoch in the log file, after a start banner; the written files listed at the end.
    log = (out / "train.log").read_text()
    assert "=== " in log.splitlines()[0]
    assert "device cpu (float32)" in log
    assert "data: 25 training images in 10 classes" in log
    for stage in ("stage1", "stage2"):
        for epoch in (1, 2):
            assert f"{stage} epoch {epoch}/2 | loss " in log
    assert " | lr " in log
    assert " | ETA " in log
    assert "stage2 (+BWLM) done in" in log
    assert str(out / "results.json") in log.splitlines()[-1] or str(out / "results.json") in log


@pytest.mark.slow
def test_cifar_naive_and_augmented_stage2(cifar_root: Path, tmp_path: Path) -> None:
    script = _import("reproduce_cifar_lt")
    out = tmp_path / "naive"
    assert script.main(_cifar_args(cifar_root, out, "--row", "naive", "--epochs", "1")) == 0
    results = _check_results(out, ["naive"], 10)
    assert results["data"]["stage1_size"] == results["data"]["num_train"] == 25
    out2 = tmp_path / "bsw_aug"
    args = _cifar_args(cifar_root, out2, "--row", "BSW", "--stage1-weights", str(out / "stage1_model.pt"))
    assert script.main([*args, "--stage2-augment", "--stage2-epochs", "1"]) == 0
    results = json.loads((out2 / "results.json").read_text())
    assert results["stages"]["stage2"]["cached_features"] is False
    assert results["stages"]["stage2"]["loss"] == "bs"
    assert results["config"]["weight_decay"] == 5e-3


def _add_noise(root: Path) -> None:
    # The fabricated JPEGs are solid grey: BatchNorm over constant images blows the weights up. Add noise.
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for path in sorted(root.rglob("*.JPEG")):
        grey = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32))
        noisy = (grey + 40 * torch.randn(grey.shape, generator=gen)).clamp(0, 255).to(torch.uint8)
        Image.fromarray(noisy.numpy()).save(path, format="JPEG")


@pytest.mark.slow
def test_imagenet_two_stage_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("torchvision")
    pytest.importorskip("PIL")
    make_fake_imagenet_lt(tmp_path / "inet", counts_train=[6, 5, 4, 3, 2, 2], per_class_eval=2, image_size=8)
    _add_noise(tmp_path / "inet")
    script = _import("reproduce_imagenet_lt")
    out = tmp_path / "run"
    argv = [
        "--data", str(tmp_path / "inet"), "--image-size", "32", "--workers", "0", "--batch-size", "8",
        "--eval-batch-size", "16", "--epochs", "1", "--stage2-epochs", "2", "--no-progress", "--output", str(out),
    ]  # fmt: skip
    assert script.main(argv) == 0
    results = _check_results(out, ["stage1", "stage2"], 6, splits=("val", "test"))
    assert results["data"]["eval_sizes"] == {"test": 12, "val": 12}
    for stage in ("stage1", "stage2"):
        best = results["stages"][stage]["best_on_val"]
        assert 1 <= best["epoch"] <= results["stages"][stage]["epochs"]
        assert set(best["test"]) >= {"many", "medium", "few", "all"}
    assert (out / "best_stage1_model.pt").is_file()


@pytest.mark.slow
def test_resume_equals_uninterrupted(cifar_root: Path, tmp_path: Path) -> None:
    script = _import("reproduce_cifar_lt")
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert script.main(_cifar_args(cifar_root, ref)) == 0
    # Killed after stage-1 epoch 1, then after stage-2 epoch 1, then run to the end: 3 invocations.
    assert script.main(_cifar_args(cifar_root, cut, "--stop-after", "1")) == 3
    assert not (cut / "results.json").exists()
    assert script.main(_cifar_args(cifar_root, cut, "--resume", "--stop-after", "2")) == 3
    assert torch.load(cut / "checkpoint.pt", weights_only=True)["phase"] == "stage2"
    assert script.main(_cifar_args(cifar_root, cut, "--resume")) == 0
    a = torch.load(ref / "final_model.pt", weights_only=True)
    b = torch.load(cut / "final_model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
    ra, rb = (json.loads((p / "results.json").read_text()) for p in (ref, cut))
    assert ra["stages"]["stage2"]["test"] == rb["stages"]["stage2"]["test"]
    assert ra["stages"]["stage1"]["test"] == rb["stages"]["stage1"]["test"]
    assert ra["stages"]["stage2"]["loss_history"] == rb["stages"]["stage2"]["loss_history"]


@pytest.mark.slow
def test_ddp_two_processes_equal_one(cifar_root: Path, tmp_path: Path) -> None:
    script = _import("reproduce_cifar_lt")
    base = tmp_path / "stage1"
    assert script.main(_cifar_args(cifar_root, base, "--row", "naive", "--epochs", "1")) == 0
    weights = str(base / "stage1_model.pt")
    # 16 stage-2 samples, global batch 7: batches of 7, 7, 2, split 4 + 3, 4 + 3, 1 + 1 over the ranks.
    common = ["--row", "BWLM", "--stage1-weights", weights, "--batch-size", "7", "--stage2-epochs", "3"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert script.main([*_cifar_args(cifar_root, one), *common]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(EXAMPLES / "reproduce_cifar_lt.py"), *_cifar_args(cifar_root, two), *common,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r1, r2 = (json.loads((p / "results.json").read_text()) for p in (one, two))
    assert r2["environment"]["world_size"] == 2
    assert r1["data"]["stage2_size"] == 16
    a = torch.load(one / "final_model.pt", weights_only=True)
    b = torch.load(two / "final_model.pt", weights_only=True)
    # Sharded feature extraction and the all-reduced gradient average change the float summation order only.
    torch.testing.assert_close(b["fc.weight"], a["fc.weight"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(b["fc.bias"], a["fc.bias"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        torch.tensor(r2["stages"]["stage2"]["loss_history"]),
        torch.tensor(r1["stages"]["stage2"]["loss_history"]),
        rtol=1e-4,
        atol=1e-6,
    )  # same tolerance, same reason


@pytest.mark.slow
def test_offline_demo_reduced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = _import("offline_demo")
    argv = ["--epochs", "3", "--stage2-epochs", "3", "--seeds", "2"]
    assert demo.main([*argv, "--jobs", "1", "--output", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "Thresholds scaled" in text
    # First the one-stage table (cross-entropy against the balanced losses), then the paper's two-stage rows.
    one, two = text.index(", one stage |"), text.index(", two stages |")
    assert one < two
    for row in ("CE", "BalancedSoftmax", "LogitAdjusted", "BFS", "BWLM", "LDAM-DRW"):
        assert one < text.index(f"| {row} |") < two
    for row in ("naive", "stage1", "+CE", "+CB", "+BS", "+BFS", "+CEW", "+CBW", "+BSW", "+BWLM"):
        assert text.index(f"| {row} |") > two
    assert " ± " in text
    (last,) = [line for line in text.splitlines() if line.startswith("What the numbers say: ")]
    assert "balanced losses beat cross-entropy" in last
    assert "the paper's best two-stage row" in last
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["data"]["train_counts"] == [124, 80, 51, 33, 21, 14, 9, 5, 3, 2]
    assert list(results["one_stage"]) == ["CE", "BalancedSoftmax", "LogitAdjusted", "BFS", "BWLM", "LDAM-DRW"]
    assert results["one_stage"]["CE"] == results["table"]["naive"]  # naive is the one-stage CE model
    _check_png(tmp_path / "per_class_accuracy.png")
    # Two worker processes, one seed each, give the same scores as one process running the seeds in turn.
    assert demo.main([*argv, "--jobs", "2", "--output", str(tmp_path / "jobs2")]) == 0
    parallel = json.loads((tmp_path / "jobs2" / "results.json").read_text())
    assert parallel["per_seed"] == results["per_seed"]


def test_offline_demo_verdict_reads_the_numbers() -> None:
    demo = _import("offline_demo")
    table = {n: {"all": (0.80, 0.01)} for n in ("CE", "BalancedSoftmax", "LogitAdjusted", "BFS", "BWLM")}
    table["LDAM-DRW"] = {"all": (0.75, 0.0)}
    table.update({n: {"all": (0.70, 0.0)} for n in ("+CE", "+CB", "+BS", "+BFS", "+CEW", "+CBW", "+BSW", "+BWLM")})
    table["+BS"] = {"all": (0.85, 0.0)}
    line = demo.verdict(table)
    assert "0 of 5 balanced losses beat cross-entropy" in line
    assert "(-5.0 to +0.0 points" in line
    assert "(+BS, 85.0 %) is 5.0 points above one-stage CE" in line


@pytest.mark.slow
def test_offline_toolbox_demo_reduced(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    demo = _import("offline_toolbox_demo")
    assert demo.main(["--epochs", "2", "--stage2-epochs", "2", "--seeds", "1"]) == 0
    text = capsys.readouterr().out
    for row in ("naive", "+CE", "+BWLM", "LA", "LDAM-DRW", "naive+posthoc-LA", "s1+cRT", "s1+LWS", "s1+NCM"):
        assert f"| {row} |" in text


@pytest.mark.parametrize("name", ["reproduce_cifar_lt", "reproduce_imagenet_lt", "offline_demo"])
def test_help_documents_every_flag(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = _import(name)
    parser = module.build_parser()
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--help"])
    assert exc.value.code == 0
    raw = capsys.readouterr().out
    text = " ".join(raw.split())
    # Plain text: no Sphinx markup, no "(default: None)", each default said once.
    assert "``" not in raw
    assert ":func:" not in raw
    assert ":class:" not in raw
    assert "(default: None)" not in text
    for action in parser._actions:
        for flag in action.option_strings:
            assert flag in text
        if action.dest != "help":
            assert action.help
    if name != "offline_demo":
        for value in ("paper: 64)", "paper: 0.01)", "paper: 0.9)", "paper: 0.1)", "paper: 5e-3)"):
            assert value in text
            assert f"{value} (default:" not in text  # the paper's value is the default: said once
        assert f"paper: {320 if 'cifar' in name else 500})" in text


@pytest.mark.slow
def test_help_runs_as_a_script() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "reproduce_cifar_lt.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert proc.returncode == 0, proc.stderr
    assert "--stage2-augment" in proc.stdout


def test_crop_flip_matches_per_sample_reference() -> None:
    common = _import("_batches")
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 5, 7), dtype=torch.uint8)
    positions = torch.tensor([4, 0, 9, 2, 7, 1])
    crop = common.CropFlip(10, padding=2, flip=True, seed=3)
    crop.set_epoch(5)
    out = crop(images, positions)
    for i, p in enumerate(positions.tolist()):
        padded = torch.nn.functional.pad(images[i], (2, 2, 2, 2))
        dy, dx = crop.offsets[p].tolist()
        expected = padded[:, dy : dy + 5, dx : dx + 7]
        if crop.flips[p]:
            expected = expected.flip(-1)
        torch.testing.assert_close(out[i], expected, rtol=0, atol=0)
    assert crop.flips.any()
    assert not crop.flips.all()
    # The draws are a function of (seed, epoch) only.
    again = common.CropFlip(10, padding=2, flip=True, seed=3)
    again.set_epoch(5)
    torch.testing.assert_close(again.offsets, crop.offsets, rtol=0, atol=0)


def test_epoch_batches_shard_the_library_batches() -> None:
    batches, dist = _import("_batches"), _import("_distributed")
    from longtail_losses.data import SeededBatchSampler

    sampler = SeededBatchSampler(23, 6, seed=4)
    sampler.set_epoch(2)
    expected = list(sampler)
    one = batches.epoch_batches(23, 6, seed=4, epoch=2, d=dist.Dist())
    assert [b.tolist() for b, _ in one] == expected
    shards = [batches.epoch_batches(23, 6, seed=4, epoch=2, d=dist.Dist(rank=r, world_size=3)) for r in range(3)]
    for step, batch in enumerate(expected):
        assert [i for s in shards for i in s[step][0].tolist()] == batch
        assert all(s[step][1] == len(batch) for s in shards)


@pytest.mark.parametrize(
    ("argv", "row", "loss", "weight_decay"),
    [
        (["--row", "CEW"], "CEW", "ce", 5e-3),
        (["--row", "BS"], "BS", "bs", 0.0),
        (["--row", "naive"], "naive", "ce", 0.0),
        ([], "BWLM", "bwlm", 5e-3),  # the default: --loss bwlm with the paper's lambda
        (["--loss", "bwlm", "--weight-decay", "0"], "BFS", "bwlm", 0.0),
        (["--loss", "bfs", "--weight-decay", "1e-3"], "BWLM", "bfs", 1e-3),
        (["--loss", "cb", "--weight-decay", "1e-3"], "CBW", "cb", 1e-3),
    ],
)
def test_flags_resolve_to_a_paper_row(argv: list[str], row: str, loss: str, weight_decay: float) -> None:
    from longtail_losses import paper

    script, cli = _import("reproduce_cifar_lt"), _import("_cli")
    args = script.build_parser().parse_args(argv)
    cli.resolve_row(args)
    assert (args.row, args.loss, args.weight_decay) == (row, loss, weight_decay)
    assert paper.row(args.row).penalty == (weight_decay > 0)
    assert args.naive == (not paper.row(args.row).two_stage)


def test_row_flag_takes_every_paper_row() -> None:
    from longtail_losses import paper

    parser = _import("reproduce_cifar_lt").build_parser()
    (action,) = [a for a in parser._actions if a.dest == "row"]
    assert list(action.choices) == ["naive", "CE", "CB", "BS", "BFS", "CEW", "CBW", "BSW", "BWLM"]
    assert [paper.row(c).name for c in action.choices] == list(paper.ROWS)


def test_train_epoch_on_one_process_is_the_library_loop() -> None:
    from longtail_losses.training import train_one_epoch

    loops, dist = _import("_loops"), _import("_distributed")
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 4)
    data = [(torch.randn(5, 3), torch.randint(0, 4, (5,))) for _ in range(3)]
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    got = loops.train_epoch(
        a, [(x, y, 5) for x, y in data], F.cross_entropy, torch.optim.SGD(a.parameters(), lr=0.1), None, dist.Dist()
    )
    expected = train_one_epoch(b, data, F.cross_entropy, torch.optim.SGD(b.parameters(), lr=0.1))
    assert got == expected
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_predict_gives_argmax_and_handles_an_empty_shard() -> None:
    loops, dist = _import("_loops"), _import("_distributed")
    model = torch.nn.Linear(3, 4)
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 1])
    preds, targets = loops.predict(model, [(x[:4], y[:4]), (x[4:], y[4:])], dist.Dist())
    with torch.no_grad():
        assert preds.tolist() == model(x).argmax(1).tolist()
    assert targets.tolist() == y.tolist()
    preds, targets = loops.predict(model, [], dist.Dist())  # a rank whose shard of a tiny eval set is empty
    assert preds.shape == targets.shape == (0,)


# --------------------------------------------------------------------------------------------------------------------
# Inputs are checked before anything trains; errors are told in the scripts' flags (exit status 2)
# --------------------------------------------------------------------------------------------------------------------


def _imagenet_argv(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data", str(root), "--image-size", "32", "--workers", "0", "--batch-size", "8", "--eval-batch-size", "16",
        "--epochs", "1", "--stage2-epochs", "1", "--no-progress", "--device", "cpu", "--output", str(out), *extra,
    ]  # fmt: skip


def _nothing_trained(out: Path) -> None:
    for name in ("checkpoint.pt", "stage1_model.pt", "results.json"):
        assert not (out / name).exists()


def _refused(main, argv: list[str], out: Path, capsys: pytest.CaptureFixture[str], *texts: str) -> None:
    # An input error: exit status 2, each of `texts` in the message, nothing trained.
    assert main(argv) == 2
    err = capsys.readouterr().err
    for text in texts:
        assert text in err
    _nothing_trained(out)


def _small_imagenet(tmp_path: Path) -> Path:
    pytest.importorskip("torchvision")
    pytest.importorskip("PIL")
    root = tmp_path / "inet"
    make_fake_imagenet_lt(root, counts_train=[4, 3, 2], per_class_eval=2, image_size=8)
    return root


def test_imagenet_missing_val_folder_fails_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    root = _small_imagenet(tmp_path)
    shutil.rmtree(root / "val")  # what once trained every stage-1 epoch, then crashed with a bare FileNotFoundError
    script = _import("reproduce_imagenet_lt")
    out = tmp_path / "run"
    expected = (
        "error: Expected every image of the split files under --data",
        "test: 6 of 6 missing (first: val/n00000000/ILSVRC2012_val_00000001.JPEG)",
        "val/<wnid>/",
    )
    _refused(script.main, _imagenet_argv(root, out), out, capsys, *expected)


def test_imagenet_flat_val_layout_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _small_imagenet(tmp_path)
    for path in sorted((root / "val").glob("*/*.JPEG")):  # the official archive: val/ILSVRC2012_val_*.JPEG
        path.rename(root / "val" / path.name)
    script = _import("reproduce_imagenet_lt")
    out = tmp_path / "run"
    _refused(script.main, _imagenet_argv(root, out), out, capsys, "official flat layout", "valprep.sh")


def test_imagenet_missing_split_file_names_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torchvision")
    (tmp_path / "empty").mkdir()
    script = _import("reproduce_imagenet_lt")
    argv = _imagenet_argv(tmp_path / "empty", tmp_path / "run", "--splits", str(tmp_path / "empty"))
    _refused(
        script.main, argv, tmp_path / "run", capsys, "ImageNet-LT train list", "(from --splits)", "--train-split FILE"
    )


def test_cifar_missing_data_names_the_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _import("reproduce_cifar_lt")
    (tmp_path / "nothing").mkdir()
    assert script.main(_cifar_args(tmp_path / "nothing", tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "Expected CIFAR-100 in --data" in err
    assert "3 of 3 files are missing" in err
    assert "Pass --download" in err
    assert "download=True" not in err  # the library's argument, not the script's flag
    _nothing_trained(tmp_path / "run")


def test_unwritable_output_fails_first(cifar_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _import("reproduce_cifar_lt")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert script.main(_cifar_args(cifar_root, blocker / "run")) == 2
    assert "Expected --output" in capsys.readouterr().err


def test_missing_stage1_weights_file(cifar_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _import("reproduce_cifar_lt")
    argv = _cifar_args(cifar_root, tmp_path / "run", "--stage1-weights", str(tmp_path / "nope.pt"))
    assert script.main(argv) == 2
    assert "Expected --stage1-weights" in capsys.readouterr().err


@pytest.mark.slow
def test_stage1_weights_of_another_run_are_refused(
    cifar_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _import("reproduce_cifar_lt")
    base = tmp_path / "stage1"
    assert script.main(_cifar_args(cifar_root, base, "--row", "naive", "--epochs", "1")) == 0
    weights = str(base / "stage1_model.pt")
    capsys.readouterr()
    # Another imbalance factor: other class counts, other table rows.
    other_if = [*_cifar_args(cifar_root, tmp_path / "if3", "--stage1-weights", weights), "--imbalance-factor", "3"]
    expected = ("Expected --stage1-weights", "imbalance_factor: 6.0 there, 3.0 here", "class_counts")
    _refused(script.main, other_if, tmp_path / "if3", capsys, *expected)
    # Another seed.
    assert script.main(_cifar_args(cifar_root, tmp_path / "seed1", "--stage1-weights", weights, "--seed", "1")) == 2
    assert "seed: 0 there, 1 here" in capsys.readouterr().err
    _nothing_trained(tmp_path / "seed1")


@pytest.mark.slow
def test_crash_after_a_checkpoint_says_resume(
    cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _import("reproduce_cifar_lt")
    plots = _import("_plots")

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(plots, "plot_outputs", crash)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="disk full"):
        script.main(_cifar_args(cifar_root, out, "--row", "naive", "--epochs", "1"))
    err = capsys.readouterr().err
    assert f"saved in {out / 'checkpoint.pt'}" in err
    assert "run the same command with --resume" in err


@pytest.mark.parametrize("rank", [0, 1])
def test_download_rank0_first_then_barrier(cifar_root: Path, monkeypatch: pytest.MonkeyPatch, rank: int) -> None:
    # Under torchrun, --download once let the other ranks read before rank 0 had finished: no barrier.
    script = _import("reproduce_cifar_lt")
    common = _import("_distributed")
    events: list[str] = []
    real = script.ltd.cifar100_lt

    def loader(*args, **kwargs):
        events.append("download" if kwargs.get("download") else "read")
        return real(*args, **{k: v for k, v in kwargs.items() if k != "download"})

    monkeypatch.setattr(script.ltd, "cifar100_lt", loader)
    monkeypatch.setattr(common, "barrier", lambda d: events.append("barrier"))
    args = script.build_parser().parse_args(_cifar_args(cifar_root, Path("unused"), "--download"))
    script.make_task(args, common.Dist(rank=rank, world_size=2))
    expected_before = ["download", "download"] if rank == 0 else []
    assert events == [*expected_before, "barrier", "read", "read"]


def test_cleanup_frees_ddp_wrappers_before_destroying_the_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The DDP test once aborted at exit (SIGABRT, "terminate called without an active exception"): DDP wrappers
    # live in reference cycles and were freed by the garbage collector at shutdown, after the group was destroyed.
    import gc
    import weakref

    import torch.distributed as dist

    common = _import("_distributed")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    seen = []
    destroy = dist.destroy_process_group
    gc.disable()  # no collection by chance: only cleanup_distributed's own
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))
        ddp(torch.randn(4, 3)).sum().backward()
        # DDP's own cycles depend on torch's state (whether dynamo was imported, ...): make sure there is one.
        ddp.__dict__["_test_cycle"] = ddp
        alive = weakref.ref(ddp)
        del ddp
        assert alive() is not None  # a cycle: not freed by reference counting
        monkeypatch.setattr(dist, "destroy_process_group", lambda *a: (seen.append(alive() is None), destroy(*a)))
        common.cleanup_distributed(common.Dist(rank=0, world_size=2))  # world_size > 1: a distributed run
    finally:
        gc.enable()
        if dist.is_initialized():
            destroy()
    assert seen == [True]  # the wrapper was freed before the group was destroyed

"""Bring your own model and data: factories, ``file.py:callable``, TorchScript, ``torch.export``,
normalization, image folders, ``.npz`` class names, ``run_experiment(model=..., data=...)``, the
checks before tracing, and the input range shared by paths, attacks and run.json.

A two-layer CNN on 1x8x8 images of three synthetic classes (a bright bar in the top, middle or
bottom rows), trained for a fraction of a second; every end-to-end run traces a few images (two
paths each) in-process through ``frmargin.cli.main``.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from frmargin import cli
from frmargin.data import load_dataset
from frmargin.errors import FrmarginError
from frmargin.runs.config import RunConfig
from frmargin.runs.experiment import run_experiment
from frmargin.runs.identity import structural_hash
from mirror import MIRROR, needs_mirror

N_CLASSES = 3
N_IMAGES = 6  # images per run: 2 per class, 2 paths each
MEAN, STD = 0.5, 0.25
CNN_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn


    def factory_cnn():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)
        )


    def chance_cnn():  # predicts class 0 for every image: accuracy 1/3 on balanced data
        net = factory_cnn()
        with torch.no_grad():
            net[3].weight.mul_(0.01)
            net[3].bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
        return net
    """
)


def synthetic_digits(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 8, 8) images in [0, 1]: noise plus a bright bar in rows 0-1, 3-4 or 6-7 by class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(N_CLASSES).repeat_interleave(n_per_class)
    images = 0.3 * torch.rand(len(labels), 1, 8, 8, generator=g)
    for i, c in enumerate(labels.tolist()):
        images[i, 0, 3 * c : 3 * c + 2] += 0.6
    return images.clamp(0, 1), labels


def _train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 60) -> nn.Module:
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Iterator[dict]:
    """The factory module, weights (plain and for normalized inputs), TorchScript, .pt2, data."""
    root = tmp_path_factory.mktemp("byo")
    (root / "mymodels_byo.py").write_text(CNN_SOURCE)
    sys.path.insert(0, str(root))
    import mymodels_byo

    x, y = synthetic_digits(40, seed=1)
    net = _train(mymodels_byo.factory_cnn(), x, y)
    torch.save(net.state_dict(), root / "cnn.pt")
    net_norm = _train(mymodels_byo.factory_cnn(), (x - MEAN) / STD, y)
    torch.save(net_norm.state_dict(), root / "cnn_norm.pt")
    torch.jit.save(torch.jit.trace(net, x[:2]), root / "cnn_script.pt")
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(net, (x[:2],), dynamic_shapes=({0: batch},))
    torch.export.save(program, root / "cnn.pt2")
    xt, yt = synthetic_digits(4, seed=2)
    images = (xt.numpy() * 255).round().astype(np.uint8)
    np.savez(root / "digits.npz", images=images, labels=yt.numpy())
    names = np.array(["top", "middle", "bottom"])
    np.savez(root / "digits_named.npz", images=images, labels=yt.numpy(), class_names=names)
    from PIL import Image

    for i, (img, c) in enumerate(zip(images, yt.tolist(), strict=True)):
        cls = f"{c}_{names[c]}"  # sorted folder names = the model's class order
        (root / "folder" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0]).save(root / "folder" / cls / f"{i:03d}.png")
    yield {"root": root, "net": net, "net_norm": net_norm, "x": xt, "y": yt}
    sys.path.remove(str(root))


def frmargin(capsys, *args: str) -> tuple[int, str]:
    """Run the CLI in this process: (exit status, stderr)."""
    argv = sys.argv
    sys.argv = ["frmargin", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = argv
    return code, capsys.readouterr().err


def run_and_report(capsys, out: Path, *args: str) -> dict:
    common = ["--images", str(N_IMAGES), "--chunk-images", "2", "--no-progress", "--threads", "1"]
    code, err = frmargin(capsys, "run", *args, *common, "--out", str(out))
    assert code == 0, err
    code, err = frmargin(capsys, "report", str(out))
    assert code == 0, err
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete"
    paths = pd.read_parquet(out / "paths.parquet")
    assert len(paths) == info["n_correct"] * (N_CLASSES - 1) and info["n_correct"] >= N_IMAGES - 1
    assert paths["success"].all(), paths[["status", "steps"]]
    return info


# ------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize(
    "kind",
    ["factory", "pyfile", "torchscript", "export", "normalize"],
)
def test_user_model_runs_end_to_end(files, tmp_path, capsys, kind):
    root = files["root"]
    model = {
        "factory": ["--model", "mymodels_byo:factory_cnn", "--weights", str(root / "cnn.pt")],
        "pyfile": ["--model", f"{root / 'mymodels_byo.py'}:factory_cnn", "--weights", str(root / "cnn.pt")],
        "torchscript": ["--model", str(root / "cnn_script.pt")],
        "export": ["--model", str(root / "cnn.pt2")],
        "normalize": [
            "--model", "mymodels_byo:factory_cnn", "--weights", str(root / "cnn_norm.pt"),
            "--normalize", f"{MEAN}:{STD}",
        ],
    }[kind]  # fmt: skip
    info = run_and_report(capsys, tmp_path / kind, *model, "--data", str(root / "digits.npz"))
    assert info["class_names"] == ["class 0", "class 1", "class 2"]
    assert info["input_range"] == [0.0, 1.0] and info["chance_warning"] is None
    identity = info["model_identity"]
    net = files["net_norm"] if kind == "normalize" else files["net"]
    x = torch.as_tensor(load_dataset(root / "digits.npz").images)
    x_in = (x - MEAN) / STD if kind == "normalize" else x
    expected = (net(x_in).argmax(-1) == files["y"]).double().mean().item()
    assert info["accuracy"] == pytest.approx(expected)
    if kind == "export":
        assert identity["kind"] == "torch.export" and "inference graph" in identity["mode"]
    if kind == "normalize":
        assert identity["normalization"] == {"name": "user", "mean": [MEAN], "std": [STD]}
    if kind in ("factory", "pyfile", "normalize"):
        assert len(identity["weights_sha256"]) == 64
        assert identity["structural_hash"] != structural_hash(files["net"] if kind == "normalize" else nn.Identity())


def test_l2_preset_runs_end_to_end_with_its_error_column(files, tmp_path, capsys):
    """``--preset l2`` enters run.json and the fingerprint, and the path table gets ``l2_error``
    (the report reads it); a default run has no such column."""
    root = files["root"]
    model = [
        "--model",
        "mymodels_byo:factory_cnn",
        "--weights",
        str(root / "cnn.pt"),
        "--data",
        str(root / "digits.npz"),
    ]
    info = run_and_report(capsys, tmp_path / "l2", *model, "--preset", "l2")
    assert info["tracer_options"]["preset"] == "l2", info["tracer_options"]
    paths = pd.read_parquet(tmp_path / "l2" / "paths.parquet")
    assert paths["l2_error"].notna().all() and (paths["l2_error"] >= 0).all(), paths["l2_error"]
    default = run_and_report(capsys, tmp_path / "default", *model)
    assert "l2_error" not in pd.read_parquet(tmp_path / "default" / "paths.parquet")
    assert default["fingerprint"] != info["fingerprint"]


def test_image_folder_runs_end_to_end(files, tmp_path, capsys):
    root = files["root"]
    info = run_and_report(
        capsys, tmp_path / "folder", "--model", str(root / "cnn_script.pt"), "--data", str(root / "folder")
    )
    assert info["class_names"] == ["0_top", "1_middle", "2_bottom"]  # folder names, sorted
    ds, npz = load_dataset(root / "folder"), load_dataset(root / "digits.npz")
    assert ds.images.shape == (12, 1, 8, 8)
    order = torch.argsort(npz.labels, stable=True)  # the folder holds the images class by class
    assert torch.equal(ds.labels, npz.labels[order]) and torch.equal(ds.images, npz.images[order])
    assert load_dataset(root / "digits_named.npz").class_names == ("top", "middle", "bottom")
    resized = load_dataset(root / "folder", resize=(16, 12))
    assert resized.images.shape == (12, 1, 16, 12)


def test_npz_without_class_names_gets_generic_names(files):
    assert load_dataset(files["root"] / "digits.npz").class_names == ("class 0", "class 1", "class 2")


# ------------------------------------------------------------------------ checks up front


def test_shape_mismatch_exits_2_before_tracing(files, tmp_path, capsys, monkeypatch):
    def no_tracing(*a, **k):
        raise AssertionError("traced before the checks")

    monkeypatch.setattr("frmargin.runs.experiment.trace_my_chunks", no_tracing)
    rgb = np.random.default_rng(0).integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", images=rgb, labels=np.arange(6) % 3)
    model = ["--model", "mymodels_byo:factory_cnn", "--weights", str(files["root"] / "cnn.pt")]
    code, err = frmargin(capsys, "run", *model, "--data", str(tmp_path / "rgb.npz"), "--out", str(tmp_path / "a"))
    assert code == 2 and err.count("\n") == 1, err
    assert "(3, 8, 8)" in err and "(1, H, W)" in err, err
    assert not (tmp_path / "a").exists()
    ten = np.random.default_rng(0).integers(0, 256, (20, 1, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "ten.npz", images=ten, labels=np.arange(20) % 10)
    code, err = frmargin(capsys, "run", *model, "--data", str(tmp_path / "ten.npz"), "--out", str(tmp_path / "b"))
    assert code == 2 and err.count("\n") == 1, err
    assert "3 logits" in err and "10 classes" in err and "(1, 8, 8)" in err, err


def test_bad_options_refused_before_any_work(files, tmp_path, capsys):
    model = ["--model", "mymodels_byo:factory_cnn", "--data", str(files["root"] / "digits.npz")]
    for extra, needle in (
        (["--baselines", "deepfol"], "'--baselines'"),
        (["--input-range", "1,0"], "'--input-range'"),
        (["--normalize", "0.5"], "'--normalize'"),
        (["--weights", str(tmp_path / "none.pt")], "'--weights'"),
        (["--weights", str(files["root"] / "cnn.pt"), "--weights-sha256", "0" * 64], "'--weights-sha256'"),
        (["--box", "-1,1"], "'--box'"),
    ):
        code, err = frmargin(capsys, "run", *model, *extra, "--out", str(tmp_path / "x"))
        assert code == 2 and needle in err, (extra, err)
        assert not (tmp_path / "x").exists(), extra
    code, err = frmargin(capsys, "run", "--model", "nosuchpkg_zz:f", "--out", str(tmp_path / "x"))
    assert code == 2 and "'--model'" in err and "nosuchpkg_zz" in err


def test_chance_warning_in_stderr_and_run_json(files, tmp_path, capsys):
    args = ["--model", "mymodels_byo:chance_cnn", "--data", str(files["root"] / "digits.npz")]
    code, err = frmargin(
        capsys, "run", *args, "--images", "6", "--no-progress", "--max-steps", "3", "--out", str(tmp_path / "c")
    )
    assert code == 0, err
    info = json.loads((tmp_path / "c" / "run.json").read_text())
    assert info["accuracy"] == pytest.approx(1 / 3)
    assert "near chance" in err and "near chance" in info["chance_warning"]
    code, err = frmargin(
        capsys,
        "run",
        *args[:1],
        "mymodels_byo:factory_cnn",
        *args[2:],
        "--weights",
        str(files["root"] / "cnn.pt"),
        "--images",
        "3",
        "--no-progress",
        "--out",
        str(tmp_path / "d"),
    )
    assert code == 0 and "near chance" not in err, err
    assert json.loads((tmp_path / "d" / "run.json").read_text())["chance_warning"] is None


# ----------------------------------------------------------------------- from Python


def test_run_experiment_with_module_and_tensors(files, tmp_path):
    x, y = files["x"], files["y"]
    config = RunConfig(images=N_IMAGES, chunk_images=2, baselines=("deepfool",), input_range=(0.0, 1.0))
    out = run_experiment(config, tmp_path / "py", model=files["net"], data=(x, y), progress=False)
    info = json.loads((out / "run.json").read_text())
    assert info["model"] == "python:Sequential" and info["data_requested"] == "python"
    assert info["model_identity"]["structural_hash"] == structural_hash(files["net"])
    assert info["attack_bounds"] == [0.0, 1.0]
    baselines = pd.read_parquet(out / "baselines.parquet")
    assert (baselines["status"] == "ok").any()
    # the same module and data resume; another module or other data are refused
    run_experiment(config, out, model=files["net"], data=(x, y), resume=True, progress=False)
    with pytest.raises(FrmarginError, match=r"other model content \(--model"):
        run_experiment(config, out, model=files["net_norm"], data=(x, y), resume=True, progress=False)
    with pytest.raises(FrmarginError, match=r"other data content \(--data"):
        run_experiment(config, out, model=files["net"], data=(x.flip(0), y.flip(0)), resume=True, progress=False)


def test_data_outside_input_range_refused(files, tmp_path):
    x, y = files["x"], files["y"]
    config = RunConfig(images=N_IMAGES, input_range=(0.0, 0.5))
    with pytest.raises(FrmarginError, match="'--input-range'"):
        run_experiment(config, tmp_path / "r", model=files["net"], data=(x, y), progress=False)


# ------------------------------------------------------------------------ API consistency


class _TupleOut(nn.Module):
    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.lin, self.as_dict = nn.Linear(4, 3).double(), as_dict

    def forward(self, x):
        z = self.lin(x)
        return {"logits": z} if self.as_dict else (z, x)


@pytest.mark.parametrize("as_dict", [False, True], ids=["tuple", "dict"])
def test_fisher_refuses_tuple_and_dict_outputs_as_trace_paths_does(as_dict):
    from frmargin import DataFisher, trace_paths

    model, x = _TupleOut(as_dict).eval(), torch.randn(2, 4, dtype=torch.float64)
    with pytest.raises(FrmarginError) as from_trace:
        trace_paths(model, x, torch.tensor([0, 1]), torch.tensor([1, 0]))
    for call in (lambda F: F.logits, lambda F: F.jacobian()):
        with pytest.raises(FrmarginError) as from_fisher:
            call(DataFisher(model, x))
        assert str(from_fisher.value) == str(from_trace.value)


def test_min_l2_accepts_callables_and_results_print_short():
    from frmargin.baselines import min_l2_attack, min_l2_distance

    torch.manual_seed(0)
    lin = nn.Linear(4, 3).double().eval()
    x = torch.full((3, 4), 0.5, dtype=torch.float64)
    y = lin(x).argmax(1)
    as_module = min_l2_distance(lin, x, y, bounds=(-10, 10))
    as_callable = min_l2_distance(lambda t: lin(t), x, y, bounds=(-10, 10))
    assert torch.isfinite(as_module).all()
    assert torch.equal(as_module, as_callable)
    text = repr(min_l2_attack(lin, x, y, bounds=(-10, 10)))
    assert len(text) < 120 and "ok: 3" in text and "tensor" not in text, text


def test_path_frame_has_source_and_target():
    from frmargin import trace_paths

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double().eval()
    x = torch.randn(4, 6, dtype=torch.float64)
    y = net(x).argmax(-1)
    frame = trace_paths(net, x, y, (y + 1) % 3).to_frame()
    assert list(frame.columns[:2]) == ["source", "target"]
    assert frame["source"].tolist() == y.tolist() and frame["target"].tolist() == ((y + 1) % 3).tolist()


@needs_mirror
def test_registered_model_on_small_gray_images_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FRMARGIN_MIRROR", str(MIRROR))
    monkeypatch.setenv("FRMARGIN_HOME", str(tmp_path / "home"))
    gray = np.random.default_rng(0).integers(0, 256, (20, 1, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "digits.npz", images=gray, labels=np.arange(20) % 10)
    code, err = frmargin(capsys, "run", "--data", str(tmp_path / "digits.npz"), "--out", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1, err
    assert "(1, 8, 8)" in err and "(3, 32, 32)" in err and not (tmp_path / "r").exists(), err


def test_normalization_wrapper_refuses_other_channel_counts():
    from frmargin.models import Normalized

    net = Normalized(nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2)), (0.5, 0.5, 0.5), (0.2, 0.2, 0.2)).eval()
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(net(x), net.net((x - 0.5) / 0.2))
    with pytest.raises(FrmarginError, match=r"\(B, 3, H, W\)"):
        net(torch.rand(2, 1, 4, 4))  # would broadcast silently to 3 channels

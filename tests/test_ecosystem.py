"""Models named by the ecosystem: ``timm:NAME`` and ``robustbench:NAME``, end to end through stand-in
packages with the interfaces of timm and RobustBench (neither imports beside this machine's torch
build); their paths equal those of the same weights loaded through a factory; the options they
take are refused elsewhere; a missing or broken package is one error saying what to install.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pandas as pd
import pytest
import torch

from user_models import MODULE, frmargin, train, write_user_files

STAND_IN_MODULES = ("timm", "robustbench", "robustbench.utils")
RB_NAME = "Tiny2024Bars"


def _forget_stand_ins() -> None:
    for name in STAND_IN_MODULES:
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def eco(tmp_path_factory) -> Iterator[dict]:
    """The user's files, the stand-ins on the path, and weights in the libraries' layouts: a
    Hugging Face safetensors file and a timm training checkpoint for timm, RobustBench's model
    folder (``DIR/cifar10/Linf/NAME.pt``, ``module.`` prefixes) for RobustBench."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("eco")
    write_user_files(root)
    sys.path[:0] = [str(root), str(root / "stand_ins")]
    _forget_stand_ins()
    module = __import__(MODULE)
    net, ema = train(module.cnn()), train(module.cnn(), steps=20)
    state = net.state_dict()
    save_file(state, str(root / "model.safetensors"))
    torch.save(state, root / "cnn.pt")
    torch.save({"arch": "tiny_cnn", "epoch": 5, "state_dict": state, "state_dict_ema": ema.state_dict(),
                "optimizer": torch.optim.SGD(net.parameters(), lr=0.1).state_dict()}, root / "train.pth.tar")  # fmt: skip
    folder = root / "rb_models" / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, folder / f"{RB_NAME}.pt")
    yield {"root": root, "net": net, "ema": ema, "data": ["--data", str(root / "bars.npz")]}
    sys.path.remove(str(root))
    sys.path.remove(str(root / "stand_ins"))
    _forget_stand_ins()
    sys.modules.pop(MODULE, None)


def _run(capsys, out, *args: str, report: bool = True) -> tuple[dict, pd.DataFrame, str]:
    common = ["--images", "6", "--chunk-images", "3", "--no-progress", "--threads", "1", "--device", "cpu"]
    code, _, err = frmargin(capsys, "run", *args, *common, "--out", str(out))
    assert code == 0, err
    if report:
        code, _, report_err = frmargin(capsys, "report", str(out))
        assert code == 0 and (out / "report.html").is_file(), report_err
        report = (out / "report.md").read_text()  # the gallery rebuilds the model through the library too
        assert "re-traced path reproduces" in report and "differs from the stored one" not in report, report
    return json.loads((out / "run.json").read_text()), pd.read_parquet(out / "paths.parquet"), err


@pytest.fixture(scope="module")
def reference(eco, tmp_path_factory) -> pd.DataFrame:
    """The paths of the same weights loaded through the user's factory."""
    out = tmp_path_factory.mktemp("reference") / "run"
    weights = str(eco["root"] / "cnn.pt")
    _, paths, _ = _run(None, out, "--model", f"{MODULE}:cnn", "--weights", weights, *eco["data"], report=False)
    return paths


def test_timm_name_end_to_end(eco, reference, tmp_path, capsys):
    import timm

    weights = str(eco["root"] / "model.safetensors")
    info, paths, err = _run(capsys, tmp_path / "timm", "--model", "timm:tiny_cnn", "--weights", weights, *eco["data"])
    assert timm.CALLS[-1] == {"model_name": "tiny_cnn", "pretrained": False, "num_classes": 3}
    identity = info["model_identity"]
    assert identity["kind"] == "timm" and identity["architecture"] == "tiny_cnn"
    assert identity["weights_layout"]["format"] == "safetensors"
    assert identity["timm_normalization"] == {"mean": [0.5], "std": [0.25]}
    assert "pass --normalize 0.5:0.25 if the weights expect it" in err, err
    assert len(paths) > 0 and paths["success"].all()
    pd.testing.assert_frame_equal(paths, reference, check_exact=True)


def test_timm_training_checkpoint_takes_the_weights_key(eco, capsys):
    base = ["accuracy", "--model", "timm:tiny_cnn", "--weights", str(eco["root"] / "train.pth.tar"), *eco["data"],
            "--device", "cpu"]  # fmt: skip
    code, _, err = frmargin(capsys, *base)
    assert code == 2 and "'state_dict', 'state_dict_ema'" in err and "--weights-key" in err, err
    code, out, err = frmargin(capsys, *base, "--weights-key", "state_dict_ema")
    assert code == 0 and "top-1" in out and "median confidence" in out, err


def test_robustbench_name_end_to_end(eco, reference, tmp_path, capsys):
    from robustbench import utils

    folder = str(eco["root"] / "rb_models")
    info, paths, _ = _run(capsys, tmp_path / "rb", "--model", f"robustbench:{RB_NAME}", "--model-dir", folder,
                          "--model-dataset", "cifar10", "--threat-model", "Linf", *eco["data"])  # fmt: skip
    assert utils.CALLS[-1] == {"model_name": RB_NAME, "model_dir": folder, "dataset": "cifar10", "threat_model": "Linf"}
    identity = info["model_identity"]
    assert (identity["kind"], identity["dataset"], identity["threat_model"]) == ("robustbench", "cifar10", "Linf")
    assert info["config"]["model_dataset"] == "cifar10" and info["config"]["threat_model"] == "Linf"
    pd.testing.assert_frame_equal(paths, reference, check_exact=True)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "timm:tiny_cnn"], "argument '--weights': got None, expected a weight file with --model timm"),
        (["--model", "timm:nope", "--weights", "W"], "timm cannot build 'nope' (RuntimeError: Unknown model (nope))"),
        (["--model", "timm:"], "argument '--model': got 'timm:', expected timm:NAME"),
        (["--model", f"robustbench:{RB_NAME}"], "option '--model-dataset': none given with --model robustbench"),
        (["--model", f"robustbench:{RB_NAME}", "--model-dataset", "cifar10", "--model-dir", "EMPTY"],
         "RobustBench cannot load 'Tiny2024Bars' for cifar10/Linf (ConnectionError"),
        (["--model", f"robustbench:{RB_NAME}", "--weights", "W"], "RobustBench loads its own weights"),
        (["--model", f"robustbench:{RB_NAME}", "--threat-model", "Linfty"],
         "argument '--threat-model': got 'Linfty', expected one of Linf, L2, corruptions"),
        (["--model", f"{MODULE}:cnn", "--model-dir", "D"], "argument '--model-dir': got 'D', expected it only with"),
    ],
    ids=["timm-no-weights", "timm-unknown", "timm-no-name", "rb-no-dataset", "rb-offline", "rb-weights",
         "rb-threat", "dir-elsewhere"],
)  # fmt: skip
def test_bad_ecosystem_options_exit_2_before_any_work(eco, tmp_path, capsys, args, needle):
    args = [str(eco["root"] / "model.safetensors") if a == "W" else str(tmp_path / "empty") if a == "EMPTY" else a
            for a in args]  # fmt: skip
    code, _, err = frmargin(capsys, "run", *args, *eco["data"], "--out", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "r").exists()
    if "RobustBench cannot load" in needle:  # where the checkpoint is expected
        assert str(tmp_path / "empty" / "cifar10" / "Linf" / f"{RB_NAME}.pt") in err


@pytest.mark.parametrize("package, spec", [("timm", "timm:tiny_cnn"), ("robustbench", f"robustbench:{RB_NAME}")])
def test_a_missing_package_says_what_to_install(eco, tmp_path, capsys, monkeypatch, package, spec):
    for name in STAND_IN_MODULES:
        if name.startswith(package):
            monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    extra = ["--weights", str(eco["root"] / "cnn.pt")] if package == "timm" else ["--model-dataset", "cifar10"]
    code, _, err = frmargin(capsys, "run", "--model", spec, *extra, *eco["data"], "--out", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1, err
    assert f"needs the {package} package, but it is not installed; install it: pip install 'frmargin[{package}]'" in err


def test_a_package_that_fails_on_import_is_one_error(eco, tmp_path, capsys, monkeypatch):
    broken = tmp_path / "broken" / "timm"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    monkeypatch.syspath_prepend(str(broken.parent))
    monkeypatch.delitem(sys.modules, "timm", raising=False)
    args = ["--model", "timm:tiny_cnn", "--weights", str(eco["root"] / "cnn.pt"), *eco["data"]]
    code, _, err = frmargin(capsys, "run", *args, "--out", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1, err
    assert "importing it fails (RuntimeError: operator torchvision::nms does not exist)" in err, err

"""Weight files as training scripts write them: one generated checkpoint per layout, each loading
to the very logits of the model it was saved from, for two model families (a CNN with batch norm,
an MLP with layer norm); what run.json records; the one error for an ambiguous file, a file of
another architecture and a file with no state dict, before any tracing; the trial of a user with a
``{'state_dict': [sd], 'epoch': ...}`` file saved from CUDA, end to end with ``--weights`` alone.
"""

from __future__ import annotations

import json
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch

from frmargin.errors import FrmarginError
from frmargin.models.checkpoints import load_weights, read_weights
from frmargin.runs.identity import structural_hash
from user_models import MODULE, bars_data, cuda_tagged, frmargin, train, write_user_files

FAMILIES = ("cnn", "mlp")


def _prefixed(prefix: str) -> Callable[[dict], object]:
    return lambda sd: {prefix + k: v for k, v in sd.items()}


def _optimizer_state(sd: dict) -> dict:
    """An Adam state dict of the parameters: its per-parameter entries are str -> tensor too."""
    params = [v.clone().requires_grad_(True) for v in sd.values() if v.is_floating_point()]
    opt = torch.optim.Adam(params)
    sum(p.sum() for p in params).backward()
    opt.step()
    return opt.state_dict()


#: layout -> (how the checkpoint is made from a state dict, the key path found, the prefixes stripped)
LAYOUTS: dict[str, tuple[Callable[[dict], object], str, tuple[str, ...]]] = {
    "plain": (lambda sd: sd, "", ()),
    "state_dict": (lambda sd: {"state_dict": sd, "epoch": 3, "best_acc1": 91.2}, "state_dict", ()),
    "model": (lambda sd: {"model": sd, "optimizer": _optimizer_state(sd), "epoch": 3}, "model", ()),
    "model_state_dict": (lambda sd: {"model_state_dict": sd, "loss": 0.25}, "model_state_dict", ()),
    "net": (lambda sd: {"net": sd, "acc": 93.1, "epoch": 200}, "net", ()),
    "ema": (lambda sd: {"ema": sd, "updates": 1000}, "ema", ()),
    "list": (lambda sd: [sd], "0", ()),
    "tuple": (lambda sd: (sd, {"epoch": 3}), "0", ()),
    "module": (_prefixed("module."), "", ("module.",)),
    "orig_mod": (_prefixed("_orig_mod."), "", ("_orig_mod.",)),
    "compiled_parallel": (lambda sd: {"state_dict": _prefixed("_orig_mod.module.")(sd)}, "state_dict",
                          ("_orig_mod.", "module.")),
}  # fmt: skip


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Iterator[dict]:
    """The user's model file on the path, a trained model of each family and the data."""
    root = tmp_path_factory.mktemp("checkpoints")
    write_user_files(root)
    sys.path.insert(0, str(root))
    module = __import__(MODULE)
    nets = {name: train(getattr(module, name)()) for name in FAMILIES}
    x, _ = bars_data(root)
    yield {"root": root, "module": module, "nets": nets, "x": x}
    sys.path.remove(str(root))
    sys.modules.pop(MODULE, None)


def _fresh(user: dict, family: str) -> torch.nn.Module:
    """An untrained model of ``family`` (other weights than the trained one)."""
    torch.manual_seed(123)
    net = getattr(user["module"], family)().eval()
    for p in net.parameters():
        torch.nn.init.normal_(p)
    return net


def _assert_same_logits(user: dict, family: str, net: torch.nn.Module) -> None:
    expected = user["nets"][family](user["x"])
    got = net.eval()(user["x"])
    assert torch.equal(got, expected), f"{family}: max difference {(got - expected).abs().max().item():.3g}"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_loads_to_the_same_logits(user, tmp_path, layout, family):
    make, key, stripped = LAYOUTS[layout]
    path = tmp_path / f"{layout}.pth"
    torch.save(make(user["nets"][family].state_dict()), path)
    net = _fresh(user, family)
    assert not torch.equal(net(user["x"]), user["nets"][family](user["x"]))  # the load is what makes them equal
    facts = load_weights(net, path)
    _assert_same_logits(user, family, net)
    layout_found = facts["weights_layout"]
    assert layout_found["key"] == key and tuple(layout_found["prefixes_stripped"]) == stripped
    assert layout_found["format"] == "torch.save" and layout_found["saved_on"] == ["cpu"]
    assert layout_found["tensors"] == len(net.state_dict()) and len(facts["weights_sha256"]) == 64


@pytest.mark.parametrize("family", FAMILIES)
def test_tensors_saved_on_cuda_load_on_the_cpu(user, tmp_path, family):
    path = tmp_path / "cuda.pth"
    with cuda_tagged():
        torch.save({"state_dict": user["nets"][family].state_dict()}, path)
    with zipfile.ZipFile(path) as z:  # the file names the device as one saved from a GPU does
        pickle = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert b"cuda:0" in pickle and b"cpu" not in pickle
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)  # without a map_location, as before
    net = _fresh(user, family)
    facts = load_weights(net, path)
    _assert_same_logits(user, family, net)
    assert facts["weights_layout"]["saved_on"] == ["cuda:0"] and facts["weights_layout"]["map_location"] == "cpu"
    assert all(t.device.type == "cpu" for t in net.state_dict().values())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_safetensors_files_by_suffix_or_content(user, tmp_path, family, suffix):
    from safetensors.torch import save_file

    path = tmp_path / f"model{suffix}"
    save_file(_prefixed("module.")(user["nets"][family].state_dict()), str(path))
    net = _fresh(user, family)
    facts = load_weights(net, path)
    _assert_same_logits(user, family, net)
    assert facts["weights_layout"]["format"] == "safetensors"
    assert facts["weights_layout"]["prefixes_stripped"] == ["module."]


def test_safetensors_without_the_package_says_what_to_install(user, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    save_file(user["nets"]["cnn"].state_dict(), str(tmp_path / "m.safetensors"))
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(FrmarginError, match=r"safetensors package: pip install 'frmargin\[models\]'"):
        read_weights(tmp_path / "m.safetensors", "m.safetensors")


def test_a_model_whose_own_names_carry_the_prefix_keeps_them(user, tmp_path):
    class Holder(torch.nn.Module):  # DataParallel-like: the model's own names start with module.
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.module = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.module(x)

    torch.save(Holder(user["nets"]["cnn"]).state_dict(), tmp_path / "held.pth")
    net = Holder(_fresh(user, "cnn"))
    facts = load_weights(net, tmp_path / "held.pth")
    _assert_same_logits(user, "cnn", net)
    assert facts["weights_layout"]["prefixes_stripped"] == []


def test_several_fitting_state_dicts_are_one_error_and_the_key_chooses(user, tmp_path):
    ema = train(user["module"].cnn(), steps=20)  # other weights of the same architecture
    path = tmp_path / "two.pth"
    torch.save({"model": user["nets"]["cnn"].state_dict(), "ema": ema.state_dict(), "epoch": 9}, path)
    with pytest.raises(FrmarginError) as err:
        load_weights(_fresh(user, "cnn"), path)
    text = str(err.value)
    assert "2 state dicts that fit" in text and "'model'" in text and "'ema'" in text and "--weights-key" in text
    net = _fresh(user, "cnn")
    assert load_weights(net, path, key="ema")["weights_layout"]["key"] == "ema"
    assert torch.equal(net(user["x"]), ema(user["x"]))
    net = _fresh(user, "cnn")
    load_weights(net, path, key="model")
    _assert_same_logits(user, "cnn", net)


def test_weights_key_follows_paths_and_names_what_is_there(user, tmp_path):
    path = tmp_path / "nested.pth"
    torch.save({"state_dict": [user["nets"]["cnn"].state_dict()], "epoch": 3}, path)
    for key in ("state_dict", "state_dict/0"):
        net = _fresh(user, "cnn")
        assert load_weights(net, path, key=key)["weights_layout"]["key"] == "state_dict/0"
        _assert_same_logits(user, "cnn", net)
    with pytest.raises(FrmarginError, match=r"option '--weights-key': got 'model'.*entries: 'state_dict', 'epoch'"):
        load_weights(_fresh(user, "cnn"), path, key="model")


def test_another_architecture_is_one_error_naming_missing_and_unexpected(user, tmp_path):
    path = tmp_path / "mlp.pth"
    torch.save({"state_dict": user["nets"]["mlp"].state_dict(), "epoch": 1}, path)
    with pytest.raises(FrmarginError) as err:
        load_weights(_fresh(user, "cnn"), path)
    text = str(err.value)
    cnn_names = sorted(user["nets"]["cnn"].state_dict())
    mlp_names = sorted(user["nets"]["mlp"].state_dict())
    assert f"{len(cnn_names)} missing ({', '.join(cnn_names[:5])}" in text, text
    assert f"{len(mlp_names)} unexpected ({', '.join(mlp_names[:5])}" in text, text
    assert f"(+{len(mlp_names) - 5} more)" in text and "'state_dict'" in text and "\n" not in text
    torch.save({"student": user["nets"]["mlp"].state_dict(), "teacher": [user["nets"]["mlp"].state_dict()]}, path)
    with pytest.raises(FrmarginError, match=r"state dicts in the file: 'student', 'teacher/0' \(--weights-key"):
        load_weights(_fresh(user, "cnn"), path)


def test_another_width_names_the_shapes(user, tmp_path):
    torch.save(user["module"].cnn_wide().state_dict(), tmp_path / "wide.pth")
    with pytest.raises(FrmarginError, match=r"of another shape \(bn.bias: file \(6,\), model \(4,\)"):
        load_weights(_fresh(user, "cnn"), tmp_path / "wide.pth")


@pytest.mark.parametrize(
    "content, needle",
    [
        ({"epoch": 3, "optimizer": {"param_groups": [{"lr": 0.1}]}}, "holds no state dict (dict with entries 'epoch'"),
        (torch.zeros(3), "holds no state dict (Tensor"),
    ],
    ids=["no-tensors", "a-tensor"],
)
def test_no_state_dict_is_one_error(user, tmp_path, content, needle):
    torch.save(content, tmp_path / "none.pth")
    with pytest.raises(FrmarginError, match=r"option '--weights'") as err:
        load_weights(_fresh(user, "cnn"), tmp_path / "none.pth")
    assert needle in str(err.value)


def test_pickled_modules_stay_refused(user, tmp_path):
    torch.save(user["nets"]["cnn"], tmp_path / "whole.pth")  # a pickled module: weights_only refuses it
    with pytest.raises(FrmarginError, match=r"cannot be read with weights_only=True .*not a pickled module"):
        load_weights(_fresh(user, "cnn"), tmp_path / "whole.pth")


# ----------------------------------------------------------------------------- command line


def _trial_file(user: dict, path: Path) -> Path:
    """What the user's training script wrote: the state dict in a list, saved from CUDA."""
    state = user["nets"]["cnn"].state_dict()
    with cuda_tagged():
        torch.save({"state_dict": [state], "err": 0.05, "epoch": 30, "sampler_indices": torch.arange(40)}, path)
    return path


def test_the_trial_runs_with_weights_alone(user, tmp_path, capsys):
    weights = _trial_file(user, tmp_path / "cifar_deep.pth")
    root, out = user["root"], tmp_path / "run"
    common = ["--data", str(root / "bars.npz"), "--images", "6", "--chunk-images", "3", "--no-progress"]
    code, _, err = frmargin(capsys, "run", "--model", f"{MODULE}:cnn", "--weights", str(weights), *common,
                            "--threads", "1", "--out", str(out))  # fmt: skip
    assert code == 0, err
    code, _, err = frmargin(capsys, "report", str(out))
    assert code == 0 and (out / "report.html").is_file(), err
    info = json.loads((out / "run.json").read_text())
    layout = info["model_identity"]["weights_layout"]
    assert layout == {"format": "torch.save", "key": "state_dict/0", "prefixes_stripped": [], "tensors": 9,
                      "saved_on": ["cuda:0"], "map_location": "cpu"}  # fmt: skip
    # the weights' hash is the module's own (as before the output reading existed), so older runs resume
    assert info["model_identity"]["structural_hash"] == structural_hash(user["nets"]["cnn"])
    x, y = bars_data(root)
    images = pd.read_parquet(out / "images.parquet")
    index = torch.tensor(images["image_index"].to_numpy())
    correct = (user["nets"]["cnn"](x[index]).argmax(-1) == y[index]).numpy()
    assert (images["correct"].to_numpy() == correct).all() and info["n_correct"] == correct.sum()
    paths = pd.read_parquet(out / "paths.parquet")
    assert len(paths) == 2 * info["n_correct"] and paths["success"].all(), paths[["status", "steps"]]


def test_a_checkpoint_of_another_architecture_exits_2_before_tracing(user, tmp_path, capsys, monkeypatch):
    def no_tracing(*a, **k):
        raise AssertionError("traced before the checks")

    monkeypatch.setattr("frmargin.runs.experiment.trace_my_chunks", no_tracing)
    torch.save({"model": user["nets"]["mlp"].state_dict()}, tmp_path / "mlp.pth")
    code, _, err = frmargin(capsys, "run", "--model", f"{MODULE}:cnn", "--weights", str(tmp_path / "mlp.pth"),
                            "--data", str(user["root"] / "bars.npz"), "--out", str(tmp_path / "r"))  # fmt: skip
    assert code == 2 and err.count("\n") == 1, err
    assert "9 missing (bn.bias" in err and "6 unexpected (hidden.bias" in err and "'model'" in err, err
    assert not (tmp_path / "r").exists()


def test_weights_key_on_the_command_line(user, tmp_path, capsys):
    torch.save({"model": user["nets"]["cnn"].state_dict(), "ema": user["nets"]["cnn"].state_dict()}, tmp_path / "t.pth")
    args = ["accuracy", "--model", f"{MODULE}:cnn", "--weights", str(tmp_path / "t.pth"),
            "--data", str(user["root"] / "bars.npz"), "--device", "cpu"]  # fmt: skip
    code, _, err = frmargin(capsys, *args)
    assert code == 2 and "--weights-key" in err and err.count("\n") == 1, err
    code, out, err = frmargin(capsys, *args, "--weights-key", "ema")
    assert code == 0 and "top-1" in out, err
    code, _, err = frmargin(capsys, "accuracy", "--model", f"{MODULE}:cnn", "--weights-key", "ema")
    assert code == 2 and "argument '--weights-key': got 'ema'" in err and "--weights FILE" in err, err

"""Model outputs read as logits: Hugging Face-style objects, dicts and tuples, automatically or by
``--output``; the same paths, bit for bit, as the same module returning plain logits (command
line and Python API); what run.json and stderr say; the errors for outputs that hold no logits;
``frmargin accuracy`` with the model options of ``run``.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import torch

from frmargin.errors import FrmarginError
from frmargin.models import Normalized, logits_of
from frmargin.models.outputs import LogitsOf, describe_output, parse_output
from frmargin.runs.config import RunConfig
from frmargin.runs.experiment import run_experiment
from frmargin.temperature import fit_temperature_logits
from user_models import MODULE, bars_data, frmargin, train, write_user_files

KINDS = ("plain", "hf", "dict_out", "tuple_out")
HF_READ = "the .logits attribute of ImageClassifierOutput"


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Iterator[dict]:
    """The user's model file on the path, one trained CNN's weights and a module of each kind
    holding them."""
    root = tmp_path_factory.mktemp("outputs")
    write_user_files(root)
    sys.path.insert(0, str(root))
    module = __import__(MODULE)
    trained = train(module.plain())
    torch.save(trained.state_dict(), root / "cnn.pt")
    nets = {}
    for kind in KINDS:
        nets[kind] = getattr(module, kind)().eval().requires_grad_(False)
        nets[kind].load_state_dict(trained.state_dict())
    x, y = bars_data(root)
    yield {"root": root, "module": module, "nets": nets, "x": x, "y": y}
    sys.path.remove(str(root))
    sys.modules.pop(MODULE, None)


# ----------------------------------------------------------------------------------- reading


@pytest.mark.parametrize(
    "kind, how, read",
    [
        ("plain", None, "the output tensor"),
        ("hf", None, HF_READ),
        ("hf", "logits", "the 'logits' entry of ImageClassifierOutput"),
        ("hf", 0, "element 0 of ImageClassifierOutput of 2"),
        ("dict_out", "scores", "the 'scores' entry of dict"),
        ("tuple_out", None, "element 0 of tuple of 2"),
        ("tuple_out", "0", "element 0 of tuple of 2"),
    ],
)
def test_outputs_are_read_as_the_logits(user, kind, how, read):
    net = LogitsOf(user["nets"][kind], how)
    z = net(user["x"])
    assert torch.equal(z, user["nets"]["plain"](user["x"]))
    assert net.read == read and net.adapted == (kind != "plain")


@pytest.mark.parametrize(
    "kind, how, needle",
    [
        (
            "dict_out",
            None,
            r"returned a dict with keys \['features', 'scores'\], expected logits .*--output KEY\|INDEX",
        ),
        ("features_only", None, r"returned a dict with keys \['features'\]"),
        ("hf", "scores", r"option '--output': got 'scores', but the model returned a ImageClassifierOutput"),
        ("tuple_out", 2, r"option '--output': got 2, but the model returned a tuple of 2 \(Tensor \(12, 3\)"),
        ("plain", "logits", r"it is the logits already, expected no --output"),
    ],
)
def test_outputs_without_logits_are_one_error(user, kind, how, needle):
    net = getattr(user["module"], kind)().eval()
    with pytest.raises(FrmarginError, match=needle):
        LogitsOf(net, how)(user["x"])


def test_parse_output_and_descriptions():
    assert parse_output(None) is None and parse_output("auto") is None
    assert parse_output(" logits ") == "logits" and parse_output("-1") == -1 and parse_output(2) == 2
    with pytest.raises(FrmarginError, match="option '--output': got ''"):
        parse_output("")
    with pytest.raises(FrmarginError, match=r"argument 'how': got 1\.5"):
        parse_output(1.5, "how")
    assert describe_output(torch.zeros(2, 3)) == "a tensor (2, 3)"
    assert describe_output([torch.zeros(1), 1, "a", None]) == "a list of 4 (Tensor (1,), int, str, ...)"


# ------------------------------------------------------------------------------ Python API


def test_python_api_takes_logits_of_and_names_it_otherwise(user):
    from frmargin import DataFisher, trace_paths

    hf, plain = (copy.deepcopy(user["nets"][kind]).double() for kind in ("hf", "plain"))
    x = user["x"][:4].double()
    y = plain(x).argmax(-1)
    with pytest.raises(FrmarginError, match=r"frmargin.models.logits_of\(model\)"):
        trace_paths(hf, x, y, (y + 1) % 3)
    with pytest.raises(FrmarginError, match=r"argument 'model': the model returned a dict .*how=KEY\|INDEX"):
        DataFisher(logits_of(copy.deepcopy(user["nets"]["dict_out"]).double()), x)
    assert torch.equal(DataFisher(logits_of(hf), x).dense(), DataFisher(plain, x).dense())
    a = trace_paths(logits_of(hf), x, y, (y + 1) % 3).to_frame()
    b = trace_paths(plain, x, y, (y + 1) % 3).to_frame()
    pd.testing.assert_frame_equal(a, b, check_exact=True)


# ---------------------------------------------------------------------------- command line


def _run(capsys, user, out, *model_args: str) -> tuple[dict, pd.DataFrame, str]:
    common = ["--data", str(user["root"] / "bars.npz"), "--images", "6", "--chunk-images", "3", "--no-progress",
              "--threads", "1", "--device", "cpu"]  # fmt: skip
    code, _, err = frmargin(capsys, "run", *model_args, *common, "--out", str(out))
    assert code == 0, err
    code, _, report_err = frmargin(capsys, "report", str(out))
    assert code == 0 and (out / "report.html").is_file(), report_err
    report = (out / "report.md").read_text()  # the gallery re-traces paths with the run's model, as traced
    assert "re-traced path reproduces" in report and "differs from the stored one" not in report, report
    return json.loads((out / "run.json").read_text()), pd.read_parquet(out / "paths.parquet"), err


def test_hugging_face_style_model_runs_and_its_paths_equal_the_plain_ones(user, tmp_path, capsys):
    weights = ["--weights", str(user["root"] / "cnn.pt")]
    hf_info, hf_paths, hf_err = _run(capsys, user, tmp_path / "hf", "--model", f"{MODULE}:hf", *weights)
    plain_info, plain_paths, plain_err = _run(capsys, user, tmp_path / "plain", "--model", f"{MODULE}:plain", *weights)
    assert len(hf_paths) == 2 * hf_info["n_correct"] > 0 and hf_paths["success"].all()
    pd.testing.assert_frame_equal(hf_paths, plain_paths, check_exact=True)
    assert hf_info["model_identity"]["output"] == {"logits": HF_READ, "chosen": "automatically"}
    assert "output" not in plain_info["model_identity"]
    assert hf_err.count(f"are read from {HF_READ}") == 1 and "read from" not in plain_err, hf_err
    # the weights' hash is the module's own, not the wrapper's
    assert hf_info["model_identity"]["structural_hash"] == plain_info["model_identity"]["structural_hash"]


def test_a_tuple_output_at_another_temperature_runs_and_reports(user, tmp_path, capsys):
    weights = ["--weights", str(user["root"] / "cnn.pt")]
    info, paths, _ = _run(capsys, user, tmp_path / "t", "--model", f"{MODULE}:tuple_out", *weights,
                            "--temperature", "2")  # fmt: skip
    assert info["temperature"] == 2.0 and len(paths) > 0
    assert info["model_identity"]["output"]["logits"] == "element 0 of tuple of 2"


def test_run_experiment_reads_a_module_s_outputs(user, tmp_path):
    config = RunConfig(images=3, chunk_images=3, output="scores")
    data = (user["x"], user["y"])
    out = run_experiment(config, tmp_path / "py", model=user["nets"]["dict_out"], data=data, progress=False)
    info = json.loads((out / "run.json").read_text())
    assert info["model_identity"]["output"] == {"logits": "the 'scores' entry of dict", "chosen": "--output scores"}
    plain = run_experiment(RunConfig(images=3, chunk_images=3), tmp_path / "p", model=user["nets"]["plain"],
                           data=data, progress=False)  # fmt: skip
    pd.testing.assert_frame_equal(pd.read_parquet(out / "paths.parquet"), pd.read_parquet(plain / "paths.parquet"))
    assert config.fingerprint() != RunConfig(images=3, chunk_images=3).fingerprint()


def test_outputs_without_logits_exit_2_before_any_work(user, tmp_path, capsys):
    base = ["run", "--weights", str(user["root"] / "cnn.pt"), "--data", str(user["root"] / "bars.npz")]
    for model, extra, needle in (
        ("dict_out", [], "returned a dict with keys ['features', 'scores']"),
        ("hf", ["--output", "scores"], "option '--output': got 'scores'"),
        ("plain", ["--output", "logits"], "it is the logits already"),
    ):
        code, _, err = frmargin(capsys, *base, "--model", f"{MODULE}:{model}", *extra, "--out", str(tmp_path / "x"))
        assert code == 2 and err.count("\n") == 1 and needle in err, (model, err)
        assert not (tmp_path / "x").exists()


def _numbers(out: str) -> tuple[int, int, float, float]:
    top1 = re.search(r"top-1 [\d.]+% \((\d+)/(\d+)\)", out)
    median = re.search(r"median confidence (1 - )?([\d.e+-]+) ", out)
    temperature = re.search(r"temperature ([\d.e+-]+): NLL-optimal on these (\d+) images", out)
    assert top1 and median and temperature, out
    confidence = 1 - float(median.group(2)) if median.group(1) else float(median.group(2))
    return int(top1.group(1)), int(top1.group(2)), confidence, float(temperature.group(1))


@pytest.mark.parametrize("kind", ["plain", "dict_out", "normalize"])
def test_accuracy_takes_the_model_options_of_run(user, capsys, kind):
    net = user["nets"]["plain"]
    args = {
        "plain": ["--model", f"{MODULE}:plain"],
        "dict_out": ["--model", f"{MODULE}:dict_out", "--output", "scores"],
        "normalize": ["--model", f"{MODULE}:plain", "--normalize", "0.5:0.25", "--input-range", "0,1"],
    }[kind]
    code, out, err = frmargin(capsys, "accuracy", *args, "--weights", str(user["root"] / "cnn.pt"),
                              "--data", str(user["root"] / "bars.npz"), "--device", "cpu", "--limit", "10")  # fmt: skip
    assert code == 0, err
    x, y = user["x"][:10], user["y"][:10]
    logits = (Normalized(net, (0.5,), (0.25,)) if kind == "normalize" else net)(x)
    correct, n, median, temperature = _numbers(out)
    assert (correct, n) == (int((logits.argmax(-1) == y).sum()), 10)
    confidence = torch.softmax(logits.double(), -1).amax(-1).numpy()
    assert median == pytest.approx(float(np.median(confidence)), abs=1e-4)
    assert temperature == pytest.approx(fit_temperature_logits(logits, y).temperature, rel=1e-3)

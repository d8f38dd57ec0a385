"""The one options object: defaults, every refusal naming the option as the caller spells it, and
the command line generated from it (every field an option of ``frmargin run``, same defaults)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import typer
import typer.testing

from frmargin.cli import app
from frmargin.errors import FrmarginError
from frmargin.options import (
    ACCURACY_DEFAULTS,
    ACCURACY_FIELDS,
    DEFAULT_DAMPING,
    DEFAULT_MAX_STEPS,
    METHODS,
    TraceOptions,
    cli_spelling,
    parse_box,
    spelled,
)
from frmargin.paths import resolve_options, trace_paths
from frmargin.paths.options import check_box
from frmargin.runs.config import RunConfig


@pytest.mark.parametrize("method", METHODS)
def test_defaults_follow_the_method(method):
    o = resolve_options(method=method)
    assert o.damping == DEFAULT_DAMPING[method] and o.max_steps == DEFAULT_MAX_STEPS[method]
    assert all(getattr(o, k) == v for k, v in ACCURACY_DEFAULTS.items())
    assert o.box is None and o.record is False and o.top_classes is None


def test_explicit_values_are_kept_and_typed():
    o = resolve_options(damping=2, max_steps=7, box=(0, 1), record=1, accuracy={"eta": 0.1, "max_attempts": 3})
    assert (o.damping, o.max_steps, o.box, o.record, o.eta, o.max_attempts) == (2.0, 7, (0.0, 1.0), True, 0.1, 3)
    assert isinstance(o.damping, float)
    t = TraceOptions(box=[0, 1], eta=1)
    assert t.box == (0.0, 1.0) and isinstance(t.eta, float)
    assert TraceOptions(box="0,0.5").box == (0.0, 0.5) and TraceOptions(box="none").box is None


def test_options_are_frozen_and_replace_checks():
    t = TraceOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.eta = 0.1  # type: ignore[misc]
    assert t.replace(eta=0.1).eta == 0.1 and t.eta == ACCURACY_DEFAULTS["eta"]
    with pytest.raises(FrmarginError, match="argument 'eta'"):
        t.replace(eta=0)
    assert TraceOptions.build(t, max_steps=9) == TraceOptions(max_steps=9)


def test_accuracy_lists_the_changed_options_only():
    assert TraceOptions().accuracy() == {}
    assert TraceOptions(eta=0.3, rtol=0.02).accuracy() == {"eta": 0.3}
    assert set(TraceOptions().all_accuracy()) == set(ACCURACY_FIELDS)


INVALID = [
    ("method", {"method": "fast"}),
    ("metric", {"metric": "l2"}),
    ("until", {"until": "end"}),
    ("solver", {"solver": "lu"}),
    ("damping_mode", {"damping_mode": "scaled"}),
    ("eta", {"eta": 0.0}),
    ("root_tol", {"root_tol": float("inf")}),
    ("max_corrector", {"max_corrector": 0}),
    ("max_attempts", {"max_attempts": 2.5}),
    ("solver", {"solver": "cg"}),
    ("max_steps", {"max_steps": 0}),
    ("max_steps", {"max_steps": True}),
    ("cg_maxiter", {"cg_maxiter": 0}),
    ("damping", {"damping": -1.0}),
    ("top_classes", {"top_classes": 1}),
    ("top_classes", {"top_classes": 3, "until": "target"}),
    ("top_classes", {"top_classes": 3, "method": "paper", "solver": "cg"}),
    ("box", {"box": (1, 0)}),
    ("box", {"box": "unit"}),
    ("batch_size", {"batch_size": True}),
    ("batch_size", {"batch_size": 0}),
    ("memory_budget", {"memory_budget": "lots"}),
]


@pytest.mark.parametrize("name, kwargs", INVALID, ids=[f"{n}-{i}" for i, (n, _) in enumerate(INVALID)])
def test_refusals_name_the_option_as_spelled(name, kwargs):
    with pytest.raises(FrmarginError, match=f"argument '{name}'"):
        TraceOptions(**kwargs)
    with pytest.raises(FrmarginError, match=f"argument '{cli_spelling(name)}'"), spelled(cli_spelling):
        TraceOptions(**kwargs)


def test_booleans_are_not_integers():
    """``batch_size=True`` was once taken as 1: booleans are refused for every integer option."""
    for name in ("batch_size", "max_steps", "max_corrector", "max_attempts", "cg_maxiter", "top_classes"):
        with pytest.raises(FrmarginError, match=f"argument '{name}'.*got True"):
            TraceOptions(**{name: True})


def test_unknown_options_are_refused_with_a_suggestion():
    with pytest.raises(FrmarginError, match=r"argument 'option'.*'etta'.*did you mean 'eta'"):
        TraceOptions.build(None, etta=0.1)
    with pytest.raises(FrmarginError, match=r"did you mean 'eta'"):
        resolve_options(accuracy={"etta": 0.1})


def test_box_must_contain_the_inputs():
    x = torch.tensor([[0.2, 1.5]])
    assert parse_box((0, 2)) == (0.0, 2.0)
    check_box((0.0, 2.0), x)
    with pytest.raises(FrmarginError, match=r"argument 'x'.*inside box \[0.0, 1.0\]"):
        check_box((0.0, 1.0), x)


def test_trace_paths_refuses_what_the_options_refuse():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4)).double().eval()
    x = torch.zeros(1, 3, dtype=torch.float64)
    y = model(x).argmax(-1)
    for name, kwargs in INVALID:
        with pytest.raises(FrmarginError, match=f"argument '{name}'"):
            trace_paths(model, x, y, (y + 1) % 4, **kwargs)
    with pytest.raises(FrmarginError, match="argument 'options'"):
        trace_paths(model, x, y, (y + 1) % 4, {"eta": 0.1})  # type: ignore[arg-type]


def test_trace_paths_takes_options_and_overrides_alike():
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4)).double().eval()
    x = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(-1)
    a = trace_paths(model, x, y, (y + 1) % 4, TraceOptions(eta=0.2, max_steps=30))
    b = trace_paths(model, x, y, (y + 1) % 4, eta=0.2, max_steps=30)
    c = trace_paths(model, x, y, (y + 1) % 4, TraceOptions(eta=0.5), eta=0.2, max_steps=30)
    for other in (b, c):
        assert torch.equal(a.fr_length, other.fr_length) and a.status == other.status


# ------------------------------------------------------------------ the command line matches the options


def _click_options(command: str) -> dict:
    cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {p.name: p for p in cmd.params if p.param_type_name == "option"}


@pytest.mark.parametrize("command, excluded", [("run", ()), ("study", ("metric",))])
def test_every_option_field_is_a_command_line_option_with_its_default(command, excluded):
    options = _click_options(command)
    for f in dataclasses.fields(TraceOptions):
        if f.name in excluded:
            assert f.name not in options
            continue
        assert f.name in options, f"TraceOptions.{f.name} has no option in 'frmargin {command}'"
        assert options[f.name].opts == [cli_spelling(f.name)]
        assert options[f.name].default == f.default, f"default of --{f.name} differs from TraceOptions"
        assert options[f.name].help == f.metadata["help"]


def test_every_command_line_option_of_run_is_a_field_of_its_configuration():
    trace = {f.name for f in dataclasses.fields(TraceOptions)}
    config = {f.name for f in dataclasses.fields(RunConfig)} - {"trace"}
    invocation = {"out", "resume", "progress", "threads"}  # how the run is invoked, not what it is
    for name in _click_options("run"):
        if name == "help":
            continue
        assert name in trace | config | invocation, (
            f"'frmargin run --{name}' is not a field of RunConfig or TraceOptions"
        )


def test_command_line_builds_the_same_options(tmp_path, monkeypatch):
    seen = {}

    def fake_run(config, out, **kwargs):
        seen["config"] = config
        return out

    monkeypatch.setattr("frmargin.runs.experiment.run_experiment", fake_run)
    monkeypatch.setattr("frmargin.runs.config.RunConfig.validate", lambda self, spell=None: None)
    runner = typer.testing.CliRunner()
    args = ["run", "--out", str(tmp_path), "--eta", "0.3", "--box", "0,1", "--max-steps", "9", "--batch-size", "5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["config"].trace == TraceOptions(eta=0.3, box=(0.0, 1.0), max_steps=9, batch_size=5)


def test_command_line_refuses_with_its_own_spelling():
    runner = typer.testing.CliRunner()
    result = runner.invoke(app, ["run", "--max-steps", "0"])
    assert result.exit_code != 0
    assert "argument '--max-steps': got 0" in str(result.exception)

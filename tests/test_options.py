"""The one option validator: defaults, every refusal naming the option as the caller spells it."""

from __future__ import annotations

import pytest
import torch

from frmargin.errors import FrmarginError
from frmargin.paths import (
    ACCURACY_DEFAULTS,
    DEFAULT_DAMPING,
    DEFAULT_MAX_STEPS,
    METHODS,
    resolve_box,
    resolve_options,
    trace_paths,
)


def cli(name: str) -> str:
    return "--" + name.replace("_", "-")


@pytest.mark.parametrize("method", METHODS)
def test_defaults_follow_the_method(method):
    o = resolve_options(method=method)
    assert o.damping == DEFAULT_DAMPING[method] and o.max_steps == DEFAULT_MAX_STEPS[method]
    assert all(getattr(o, k) == v for k, v in ACCURACY_DEFAULTS.items())
    assert o.box is None and o.record is False and o.top_classes is None


def test_explicit_values_are_kept():
    o = resolve_options(damping=2, max_steps=7, box=(0, 1), record=1, accuracy={"eta": 0.1, "max_attempts": 3})
    assert (o.damping, o.max_steps, o.box, o.record, o.eta, o.max_attempts) == (2.0, 7, (0.0, 1.0), True, 0.1, 3)
    assert isinstance(o.damping, float)


INVALID = [
    ("method", {"method": "fast"}),
    ("metric", {"metric": "l2"}),
    ("until", {"until": "end"}),
    ("solver", {"solver": "lu"}),
    ("damping_mode", {"damping_mode": "scaled"}),
    ("eta", {"accuracy": {"eta": 0.0}}),
    ("root_tol", {"accuracy": {"root_tol": float("inf")}}),
    ("max_corrector", {"accuracy": {"max_corrector": 0}}),
    ("max_attempts", {"accuracy": {"max_attempts": 2.5}}),
    ("solver", {"solver": "cg"}),
    ("max_steps", {"max_steps": 0}),
    ("damping", {"damping": -1.0}),
    ("top_classes", {"top_classes": 1}),
    ("top_classes", {"top_classes": 3, "until": "target"}),
    ("top_classes", {"top_classes": 3, "method": "paper", "solver": "cg"}),
    ("box", {"box": (1, 0)}),
    ("box", {"box": "unit"}),
]


@pytest.mark.parametrize("name, kwargs", INVALID, ids=[f"{n}-{i}" for i, (n, _) in enumerate(INVALID)])
def test_refusals_name_the_option_as_spelled(name, kwargs):
    with pytest.raises(FrmarginError, match=f"argument '{name}'"):
        resolve_options(**kwargs)
    with pytest.raises(FrmarginError, match=f"argument '{cli(name)}'"):
        resolve_options(**kwargs, spell=cli)


def test_unknown_accuracy_options_are_listed():
    with pytest.raises(FrmarginError, match=r"accuracy option.*\['etta'\].*'eta'"):
        resolve_options(accuracy={"etta": 0.1})


def test_box_must_contain_the_inputs():
    x = torch.tensor([[0.2, 1.5]])
    assert resolve_box((0, 2), x) == (0.0, 2.0)
    with pytest.raises(FrmarginError, match=r"argument 'x'.*inside box \[0.0, 1.0\]"):
        resolve_box((0, 1), x)
    with pytest.raises(FrmarginError, match="argument 'x'"):
        resolve_options(box=(0, 1), x=x)


def test_trace_paths_refuses_what_the_resolver_refuses():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4)).double().eval()
    x = torch.zeros(1, 3, dtype=torch.float64)
    y = model(x).argmax(-1)
    for name, kwargs in INVALID:
        opts = dict(kwargs)
        opts.update(opts.pop("accuracy", {}))
        with pytest.raises(FrmarginError, match=f"argument '{name}'"):
            trace_paths(model, x, y, (y + 1) % 4, **opts)

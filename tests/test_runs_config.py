"""``RunConfig``: fingerprints that must not move, the run.json round trip, and the checks."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from frmargin.errors import FrmarginError
from frmargin.options import ACCURACY_FIELDS, TraceOptions, spelled
from frmargin.runs.config import IDENTITY_FIELDS, TOP_LEVEL_FIELDS, RunConfig, cli_spelling

#: fingerprints computed by earlier versions of the code: run
#: folders written then must still be recognized by --resume
PURE = TraceOptions(continuation="none")
KNOWN_FINGERPRINTS = {
    # written before the damped continuation existed: the pure flow, as from_run_info reads them
    "default": (RunConfig(trace=PURE), "b6573cb28e78ccad"),
    "cli-two-images": (RunConfig(images=2, data="cifar10-exact", chunk_images=1, trace=PURE), "5065a372ca90d910"),
    "deepfool-baseline": (
        RunConfig(images=20, data="cifar10-exact", baselines=("deepfool",), trace=PURE),
        "3b96760cdefeaf80",
    ),
    "euclidean-box": (
        RunConfig(images=20, data="cifar10-exact", trace=TraceOptions(metric="euclidean", box=(0.0, 1.0))),
        "2c9fda82ea0bbe41",
    ),
    "paper-cg": (
        RunConfig(trace=TraceOptions(method="paper", solver="cg", damping=1e-3, max_steps=50, cg_rtol=1e-8)),
        "18f5d45845cd9d16",
    ),
    "top-classes-float64": (
        RunConfig(dtype="float64", seed=3, trace=TraceOptions(top_classes=5, continuation="none")),
        "7a214dd41202fb5c",
    ),
    # with the damped continuation (the default since it exists)
    "default-damped": (RunConfig(), "a20d61dbfe9621ad"),
    "cli-two-images-damped": (RunConfig(images=2, data="cifar10-exact", chunk_images=1), "07a86b86d5c8fe23"),
}


@pytest.mark.parametrize("case", list(KNOWN_FINGERPRINTS))
def test_fingerprint_of_existing_configurations_is_unchanged(case):
    config, expected = KNOWN_FINGERPRINTS[case]
    assert config.fingerprint() == expected


def test_the_continuation_enters_the_identity_only_where_it_applies():
    """Damped free natural-gradient runs carry ``continuation: damped``; the pure flow, a box,
    the Euclidean metric and paper mode do not (their paths are those of runs made before it
    existed, so those keep their fingerprints)."""
    assert RunConfig().identity()["continuation"] == "damped"
    for trace in (
        PURE,
        TraceOptions(box=(0.0, 1.0)),
        TraceOptions(metric="euclidean"),
        TraceOptions(method="paper"),
        TraceOptions(perturbation="dct:4"),
    ):
        assert "continuation" not in RunConfig(trace=trace).identity(), trace
    assert (
        RunConfig(trace=TraceOptions(box=(0.0, 1.0))).fingerprint()
        == RunConfig(trace=TraceOptions(box=(0.0, 1.0), continuation="none")).fingerprint()
    )
    # a run.json written before the option existed is read as the pure flow
    assert RunConfig.from_run_info({"config": {"images": 20}}).trace.continuation == "none"


def test_fields_outside_the_identity_do_not_change_the_fingerprint():
    base = RunConfig()
    for change in ({"trace": TraceOptions(batch_size=7)}, {"baselines": ("fmn",)}, {"device": "cuda:1"}):
        assert dataclasses.replace(base, **change).fingerprint() == base.fingerprint(), change
    for name in ("images", "seed", "chunk_images"):
        assert dataclasses.replace(base, **{name: 3}).fingerprint() != base.fingerprint(), name


def test_model_options_enter_the_fingerprint_only_when_set():
    base = RunConfig(model="robustbench:Tiny", weights=None)
    for name, value in (("output", "logits"), ("threat_model", "L2"), ("model_dataset", "cifar100")):
        changed = dataclasses.replace(base, **{name: value})
        assert changed.fingerprint() != base.fingerprint() and changed.identity()[name] == value, name
        assert name not in base.identity()
        assert RunConfig.from_run_info(_new_run_info(changed)) == changed
    keyed = RunConfig(model="m:f", weights="w.pt", weights_key="state_dict/0")
    assert keyed.fingerprint() != dataclasses.replace(keyed, weights_key=None).fingerprint()
    # the content of RobustBench's folder is the model's hash; where it lies is not an option of the results
    assert dataclasses.replace(base, model_dir="/elsewhere").fingerprint() == base.fingerprint()


def _old_run_info(config: RunConfig) -> dict:
    """run.json as the code before issue 11 wrote it: the full config plus top-level copies."""
    return {
        "fingerprint": config.fingerprint(),
        "config": json.loads(json.dumps(config.flat(), default=str)),
        **{k: json.loads(json.dumps(config.flat()[k])) for k in TOP_LEVEL_FIELDS},
        "data": "cifar10-exact (resolved)",
        "data_requested": config.data,
        "damping": 1e-14,
        "max_steps": 200,
        "accuracy": 0.95,
    }


def _new_run_info(config: RunConfig) -> dict:
    info = {"fingerprint": config.fingerprint(), "config": config.run_json_entries(), "data_requested": config.data}
    info.update({k: config.flat()[k] for k in TOP_LEVEL_FIELDS})
    info.update(data="cifar10-exact (resolved)", damping=1e-14, max_steps=200, accuracy=0.95)
    return json.loads(json.dumps(info, default=str))


@pytest.mark.parametrize("layout", [_old_run_info, _new_run_info], ids=["old", "new"])
@pytest.mark.parametrize("case", list(KNOWN_FINGERPRINTS))
def test_config_round_trips_through_run_json(case, layout):
    config, fingerprint = KNOWN_FINGERPRINTS[case]
    again = RunConfig.from_run_info(layout(config))
    assert again == config and again.fingerprint() == fingerprint


def test_run_json_stores_every_field_once():
    config = RunConfig(baselines=("deepfool",), trace=TraceOptions(top_classes=4, eta=0.3))
    entries = config.run_json_entries()
    assert not set(entries) & set(TOP_LEVEL_FIELDS), "a field at the top level is repeated in 'config'"
    assert "data" not in entries, "data is stored as data_requested"
    stored = set(entries) | set(TOP_LEVEL_FIELDS) | {"data"}
    assert stored == set(config.flat())
    assert {f.name for f in dataclasses.fields(TraceOptions)} - set(ACCURACY_FIELDS) <= stored
    assert set(IDENTITY_FIELDS) <= stored


def test_resolved_values_are_the_tracer_defaults():
    assert TraceOptions().resolved_damping == 1e-14 and TraceOptions(method="paper").resolved_damping == 1e-3
    assert TraceOptions().resolved_max_steps == 200 and TraceOptions(max_steps=7).resolved_max_steps == 7
    options = RunConfig(trace=TraceOptions(eta=0.25)).trace.all_accuracy()
    assert options["eta"] == 0.25 and options["rtol"] == 0.02


BAD_OPTIONS = {
    "images": ({"images": 0}, "'--images'"),
    "chunk-images": ({"chunk_images": -1}, "'--chunk-images'"),
    "dtype": ({"dtype": "float16"}, "'--dtype'"),
    "seed": ({"seed": -1}, "'--seed'"),
    "device": ({"device": "bogus"}, "'--device'"),
    "model": ({"model": "resnt20"}, "'--model'.*did you mean 'resnet20'"),
}
BAD_TRACE_OPTIONS = {
    "batch-size": ({"batch_size": 0}, "'--batch-size'"),
    "method": ({"method": "fast"}, "'--method'"),
    "metric": ({"metric": "l1"}, "'--metric'"),
    "until": ({"until": "never"}, "'--until'"),
    "top-classes": ({"top_classes": 1}, "'--top-classes'"),
    "accuracy-name": ({"etaa": 1.0}, "'option'.*did you mean 'eta'"),
    "accuracy-value": ({"eta": -1.0}, "'--eta'"),
    "cg-with-converged": ({"solver": "cg"}, "'--solver'"),
    "damping-mode": ({"damping_mode": "sideways"}, "'--damping-mode'"),
    "damping": ({"damping": 0.0}, "'--damping'"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_validate_names_the_bad_option_as_the_cli_spells_it(case):
    change, name = BAD_OPTIONS[case]
    with pytest.raises(FrmarginError, match=name):
        RunConfig(**change).validate(spell=cli_spelling)


@pytest.mark.parametrize("case", list(BAD_TRACE_OPTIONS))
def test_trace_options_name_the_bad_option_as_the_cli_spells_it(case):
    change, name = BAD_TRACE_OPTIONS[case]
    with pytest.raises(FrmarginError, match=name), spelled(cli_spelling):
        TraceOptions.build(None, **change)


def test_validate_names_python_fields_by_default():
    with pytest.raises(FrmarginError, match="'batch_size'"):
        TraceOptions(batch_size=0)
    with pytest.raises(FrmarginError, match="'chunk_images'"):
        RunConfig(chunk_images=0).validate()


def test_valid_configurations_pass():
    for config, _ in KNOWN_FINGERPRINTS.values():
        config.validate()


def test_importing_the_config_imports_no_torch():
    code = "import sys, frmargin.runs.config as c; c.RunConfig().fingerprint(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

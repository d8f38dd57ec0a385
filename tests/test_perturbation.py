"""Perturbation models: the text (parsing, canonical form, errors naming the option), each
family's directions (orthonormality, zig-zag order, seeds, colour, basis files and their
checks), their place among the tracing options and in a run's identity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import assert_close
from frmargin.errors import FrmarginError
from frmargin.options import TraceOptions, cli_spelling, spelled
from frmargin.perturbation.bases import build_subspace, describe, family_basis, zigzag
from frmargin.perturbation.spec import HASH_DIGITS, parse_perturbation
from frmargin.perturbation.validity import out_of_range
from frmargin.runs.config import RunConfig

SHAPE = (3, 4, 4)


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("pixels", "pixels"),
        ("DCT:16", "dct:16"),
        (" color ", "color"),
        ("random:8", "random:8"),
        ("random:full:3", "random:full:3"),
        ("dct:full", "dct:full"),
    ],
)
def test_canonical_text(text, canonical):
    assert parse_perturbation(text).text == canonical
    assert TraceOptions(perturbation=text).perturbation == canonical


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("dct:0", "K in '0' to be an integer >= 1"),
        ("dct:-2", "K in '-2'"),
        ("dct:x", "K in 'x'"),
        ("dct", "dct:K"),
        ("random:4:-1", "SEED in '-1'"),
        ("random:4:1:2", "random:K[:SEED]"),
        ("color:3", "'color' without ':'"),
        ("dcct:4", "did you mean 'dct'"),
        ("wavelet:4", "pixels, dct:K, color"),
        ("basis:missing.npy", "not found"),
        ("basis:file.txt", ".npy"),
    ],
)
def test_bad_text_names_the_option(text, fragment):
    with pytest.raises(FrmarginError, match="argument 'perturbation'") as err:
        TraceOptions(perturbation=text)
    assert fragment in str(err.value)
    with spelled(cli_spelling), pytest.raises(FrmarginError, match="argument '--perturbation'"):
        TraceOptions(perturbation=text)


def test_box_is_refused_with_a_perturbation_model():
    with pytest.raises(FrmarginError, match=r"argument 'box'.*perturbation=dct:4"):
        TraceOptions(perturbation="dct:4", box=(0.0, 1.0))
    assert TraceOptions(box=(0.0, 1.0)).perturbation == "pixels"


def test_pixels_leaves_the_fingerprint_and_identity_unchanged():
    config = RunConfig(images=20)
    assert "perturbation" not in config.identity()
    dct = RunConfig(images=20, trace=TraceOptions(perturbation="dct:4"))
    assert dct.identity()["perturbation"] == "dct:4"
    assert dct.fingerprint() != config.fingerprint()
    assert RunConfig.from_run_info({"config": dct.run_json_entries(), "images": 20}).trace.perturbation == "dct:4"


def test_zigzag_order_and_dct_orthonormal():
    assert zigzag(3, 3) == [(0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (1, 2), (2, 1), (2, 2)]
    B = family_basis(parse_perturbation("dct:full"), SHAPE, torch.float64).reshape(16, -1)
    assert_close(B @ B.T, torch.eye(16, dtype=torch.float64), 0, 1e-12, "DCT Gram")
    # the lowest frequency is constant, the same pattern on every channel
    assert_close(B[0], torch.full((48,), 1 / math.sqrt(48), dtype=torch.float64), 0, 1e-12, "DC pattern")
    pattern = B[1].reshape(SHAPE)
    assert_close(pattern[1], pattern[0], 0, 0, "same pattern on every channel")


def test_random_orthonormal_and_seeded():
    a = build_subspace("random:5:7", torch.rand(2, *SHAPE, dtype=torch.float64))
    b = build_subspace("random:5:7", torch.rand(3, *SHAPE, dtype=torch.float64))
    c = build_subspace("random:5:8", torch.rand(2, *SHAPE, dtype=torch.float64))
    Ba = a.basis.reshape(5, -1)
    assert_close(Ba @ Ba.T, torch.eye(5, dtype=torch.float64), 0, 1e-12, "random Gram")
    assert torch.equal(a.basis, b.basis)
    assert not torch.allclose(a.basis, c.basis)
    # a spec without a seed is drawn with the caller's
    assert torch.equal(build_subspace("random:5", torch.rand(1, *SHAPE, dtype=torch.float64), seed=7).basis, a.basis)


def test_color_is_gain_and_offset_per_channel():
    x0 = torch.rand(2, *SHAPE, dtype=torch.float64)
    sub = build_subspace("color", x0)
    assert sub.k == 6 and not sub.shared
    u = torch.tensor([[0.5, 0.0, 0.0, 0.1, 0.0, -0.2]], dtype=torch.float64)
    x = sub.embed(torch.tensor([1]), u)[0]
    assert_close(x[0], 1.5 * x0[1, 0] + 0.1, 0, 1e-12, "channel 0: gain 0.5, offset 0.1")
    assert_close(x[1], x0[1, 1], 0, 0, "channel 1 unchanged")
    assert_close(x[2], x0[1, 2] - 0.2, 0, 1e-12, "channel 2: offset -0.2")


def test_k_larger_than_the_family_is_refused():
    x0 = torch.rand(1, *SHAPE)
    with pytest.raises(FrmarginError, match=r"argument 'perturbation'.*K <= 16 \(H x W frequencies"):
        build_subspace("dct:17", x0)
    with pytest.raises(FrmarginError, match=r"K <= 48 \(input dimensions"):
        build_subspace("random:49", x0)


def _save(tmp_path, array, name="basis.npy"):
    path = tmp_path / name
    np.save(path, array)
    return f"basis:{path}"


def test_basis_file_is_hashed_and_used(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.standard_normal((3, *SHAPE))
    text = _save(tmp_path, array)
    spec = parse_perturbation(text)
    assert len(spec.sha256) == HASH_DIGITS and spec.text.endswith(f"#sha256={spec.sha256}")
    assert parse_perturbation(spec.text) == spec  # the recorded text parses to itself
    sub = build_subspace(spec.text, torch.zeros(1, *SHAPE, dtype=torch.float64))
    assert_close(sub.basis, torch.as_tensor(array), 0, 0, "basis as given")
    assert describe(spec.text, SHAPE)["k"] == 3
    np.save(tmp_path / "basis.npy", 2 * array)  # the file changed since it was recorded
    with pytest.raises(FrmarginError, match="the basis file recorded"):
        build_subspace(spec.text, torch.zeros(1, *SHAPE, dtype=torch.float64))


@pytest.mark.parametrize(
    "array, fragment",
    [
        (np.ones((2, 3, 4, 5)), "expected (K, 3, 4, 4)"),
        (np.ones((2, 48)), "expected (K, 3, 4, 4)"),
        (np.full((2, *SHAPE), np.nan), "finite numbers"),
        (np.stack([np.ones(SHAPE), 2 * np.ones(SHAPE)]), "rank 1 for K = 2"),
        (np.ones((49, *SHAPE)), "at most the input dimension 48"),
    ],
)
def test_bad_basis_file(tmp_path, array, fragment):
    text = _save(tmp_path, array)
    with pytest.raises(FrmarginError, match="argument 'perturbation'") as err:
        build_subspace(text, torch.zeros(1, *SHAPE))
    assert fragment in str(err.value)


def test_out_of_range():
    share, worst = out_of_range(torch.tensor([[-0.5, 0.2, 1.1, 0.9], [0.1, 0.2, 0.3, 0.4]]), (0.0, 1.0))
    assert_close(share, torch.tensor([0.5, 0.0]), 0, 1e-15, "share")
    assert_close(worst, torch.tensor([0.5, 0.0]), 0, 1e-15, "largest violation")

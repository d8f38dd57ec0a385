"""DataFisher against dense float64 references on small MLPs and tiny CNNs."""

from __future__ import annotations

import pytest
import torch

import reference as ref
from conftest import DTYPE_IDS, assert_close, make_cnn, make_inputs, make_linear, make_mlp
from frmargin.errors import FrmarginError
from frmargin.fisher import DataFisher, logits_and_jacobian

# tolerances relative to the largest reference entry (atol) and entrywise (rtol)
TOL = {torch.float64: 1e-10, torch.float32: 2e-5}
SOLVE_TOL = {torch.float64: 1e-8, torch.float32: 1e-3}  # damped solves amplify by the condition number
EXACT_VS_CG = 1e-6  # float64, relative to the largest entry

MODELS = {
    "mlp-D16-C5": (lambda dt: make_mlp(16, 5, 24, 2, seed=1, dtype=dt), (16,)),
    "mlp-D40-C10": (lambda dt: make_mlp(40, 10, 16, 1, seed=2, dtype=dt, scale=2.0), (40,)),
    "linear-D8-C4": (lambda dt: make_linear(8, 4, seed=3, dtype=dt), (8,)),
    "cnn-1x8x8": (lambda dt: make_cnn(1, 8, 5, seed=4, dtype=dt), (1, 8, 8)),
    "cnn-3x8x8-bn": (lambda dt: make_cnn(3, 8, 6, seed=5, dtype=dt, batchnorm=True), (3, 8, 8)),
}
CASES = [(name, dt) for name in MODELS for dt in (torch.float64, torch.float32)]
IDS = [f"{name}-{DTYPE_IDS[dt]}" for name, dt in CASES]


def build(name, dtype, B=3, seed=0):
    factory, shape = MODELS[name]
    model = factory(dtype)
    x = make_inputs(shape, B, seed=seed, dtype=dtype)
    return model, x, DataFisher(model, x)


def scaled(t: torch.Tensor, tol: float) -> float:
    return tol * float(t.abs().amax())


@pytest.mark.parametrize("name, dtype", CASES, ids=IDS)
def test_jacobian_dense_matvec_eigenvalue(name, dtype):
    model, x, F = build(name, dtype)
    tol = TOL[dtype]
    J = ref.jacobian(model, x)
    assert_close(F.jacobian(), J, tol, scaled(J, tol), f"{name}: Jacobian rows")
    with torch.no_grad():
        assert_close(F.logits, ref.as_double(model)(x.double()), tol, tol, f"{name}: logits")
    G = ref.fisher(model, x)
    assert_close(F.dense(), G, tol, scaled(G, tol), f"{name}: dense G")
    gen = torch.Generator().manual_seed(7)
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    Gv = (G @ v.reshape(x.shape[0], -1, 1))[:, :, 0]
    out = F.matvec(v.to(dtype))
    assert out.shape == x.shape
    assert_close(out.reshape(x.shape[0], -1), Gv, tol, scaled(Gv, tol), f"{name}: G v")
    assert_close(F.largest_eigenvalue(), ref.largest_eigenvalue(G), tol, 0.0, f"{name}: lambda_max")


@pytest.mark.parametrize("name, dtype", CASES, ids=IDS)
@pytest.mark.parametrize("mode, damping", [("absolute", 1e-2), ("relative", 1e-2)])
def test_solve_exact_and_cg_vs_dense(name, dtype, mode, damping):
    model, x, F = build(name, dtype, seed=1)
    G = ref.fisher(model, x)
    lam = damping * (ref.largest_eigenvalue(G) if mode == "relative" else torch.ones(x.shape[0], dtype=torch.float64))
    gen = torch.Generator().manual_seed(8)
    g = torch.randn(x.shape, generator=gen, dtype=torch.float64)  # has a null-space component
    expected = ref.damped_solve(G, g.reshape(x.shape[0], -1), lam)
    tol = SOLVE_TOL[dtype]
    for method in ("exact", "cg"):
        v = F.solve(g.to(dtype), damping, mode, method)
        assert v.shape == x.shape
        assert_close(v.reshape(x.shape[0], -1), expected, tol, scaled(expected, tol), f"{name}: {method} {mode} solve")
    if dtype == torch.float64:
        exact = F.solve(g, damping, mode, "exact")
        cg = F.solve(g, damping, mode, "cg")
        assert_close(cg, exact, EXACT_VS_CG, scaled(exact, EXACT_VS_CG), f"{name}: exact vs CG")


def test_row_space_solve_tiny_damping():
    """g = J^T a with lam -> 0: (G + lam I)^-1 g stays bounded and equals the dense solve."""
    model, x, F = build("mlp-D40-C10", torch.float64, B=2)
    G = ref.fisher(model, x)
    J = ref.jacobian(model, x)
    a = torch.zeros(2, 10, dtype=torch.float64)
    a[:, 0], a[:, 3] = 1.0, -1.0
    g = (J.transpose(-1, -2) @ a[:, :, None])[:, :, 0]
    lam = 1e-6 * ref.largest_eigenvalue(G)
    expected = ref.damped_solve(G, g, lam)
    v = F.solve(g, 1e-6, "relative", "exact")
    assert_close(v, expected, 1e-6, scaled(expected, 1e-6), "row-space solve, relative damping 1e-6")


def test_logits_and_jacobian_batch_rows_independent():
    model = make_mlp(12, 4, 16, 2, seed=6)
    x = make_inputs((12,), 5, seed=6)
    z, J = logits_and_jacobian(model, x)
    for i in range(5):
        zi, Ji = logits_and_jacobian(model, x[i : i + 1])
        assert_close(J[i], Ji[0], 1e-13, 1e-13, f"Jacobian of row {i} alone vs in the batch")
        assert_close(z[i], zi[0], 1e-13, 1e-13, f"logits of row {i}")


def test_bad_arguments():
    model = make_mlp(8, 3, 8, 1)
    with pytest.raises(FrmarginError, match="'x'"):
        DataFisher(model, torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(FrmarginError, match="'x'"):
        DataFisher(model, torch.zeros(0, 8, dtype=torch.float64))
    F = DataFisher(model, make_inputs((8,), 2))
    with pytest.raises(FrmarginError, match="'v'"):
        F.matvec(torch.zeros(2, 7, dtype=torch.float64))
    with pytest.raises(FrmarginError, match="'method'"):
        F.solve(torch.zeros(2, 8, dtype=torch.float64), 1e-3, "absolute", "lu")
    with pytest.raises(FrmarginError, match="'damping_mode'"):
        F.solve(torch.zeros(2, 8, dtype=torch.float64), 1e-3, "scaled", "exact")


@pytest.mark.parametrize("name, dtype", CASES[:4], ids=IDS[:4])
def test_reduced_jacobian_rows(name, dtype):
    """Rows of a reduced logit map: two kept classes and the logsumexp of the rest, whose
    gradient is the softmax-weighted mix of the rest's rows."""
    model, x, _ = build(name, dtype)
    tol = TOL[dtype]
    J = ref.jacobian(model, x)
    with torch.no_grad():
        z = ref.as_double(model)(x.double())
    keep = torch.tensor([0, 2])
    rest = torch.tensor([c for c in range(z.shape[-1]) if c not in (0, 2)])

    def reduce(zz):
        return torch.cat([zz[:, keep], torch.logsumexp(zz[:, rest], -1, keepdim=True)], -1)

    logits, Jr = logits_and_jacobian(model, x, reduce=reduce)
    w = torch.softmax(z[:, rest], -1)
    expected = torch.cat([J[:, keep], (w[:, :, None] * J[:, rest]).sum(1, keepdim=True)], 1)
    assert Jr.shape == (x.shape[0], 3, J.shape[-1])
    assert_close(Jr, expected, tol, scaled(expected, tol), f"{name}: reduced Jacobian rows")
    assert_close(logits, z, tol, tol, f"{name}: the full logits come back")


@pytest.mark.parametrize("name, dtype", CASES, ids=IDS)
def test_vmapped_jacobian_route_matches_the_dense_reference(name, dtype):
    """The CUDA route (one-hot cotangents vmapped through one vjp), run here on CPU, against
    the float64 reference and the per-row loop; with a reduction too."""
    model, x, _ = build(name, dtype)
    tol = TOL[dtype]
    J = ref.jacobian(model, x)
    z_v, J_v = logits_and_jacobian(model, x, route="vmap")
    z_l, J_l = logits_and_jacobian(model, x, route="loop")
    assert J_v.shape == J.shape and J_v.is_contiguous()
    assert_close(J_v.double(), J, tol, scaled(J, tol), f"{name}: vmapped Jacobian rows")
    assert_close(J_v, J_l, tol, scaled(J_l, tol), f"{name}: vmapped vs looped rows")
    assert torch.equal(z_v, z_l)
    _, Jr = logits_and_jacobian(model, x, reduce=lambda zz: zz[:, :2] - zz[:, 2:3], route="vmap")
    expected = J[:, :2] - J[:, 2:3]
    assert_close(Jr.double(), expected, tol, scaled(expected, tol), f"{name}: vmapped reduced rows")


def test_jacobian_route_is_checked():
    with pytest.raises(FrmarginError, match="route"):
        logits_and_jacobian(torch.nn.Linear(3, 2), torch.randn(1, 3), route="jacrev")


@pytest.mark.parametrize("route", ["loop", "vmap"])
@pytest.mark.parametrize("name, dtype", CASES, ids=IDS)
def test_reference_row_jacobian_keeps_the_fisher(name, dtype, route):
    """Rows minus a reference row (one backward pass fewer, the tracer's default): each row is
    J_c - J_r against the float64 reference, row r is zero, and the Fisher information
    J^T (diag p - p p^T) J is that of the full rows; also with a reduction."""
    model, x, _ = build(name, dtype)
    tol = TOL[dtype]
    J = ref.jacobian(model, x)
    C = J.shape[1]
    with torch.no_grad():
        p = torch.softmax(ref.as_double(model)(x.double()), -1)
    M = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    dense = J.transpose(1, 2) @ M @ J
    for r in (0, C - 1):
        z, Jr = logits_and_jacobian(model, x, route=route, reference=r)
        expected = J - J[:, r : r + 1]
        assert Jr.shape == J.shape and Jr.is_contiguous()
        assert torch.equal(Jr[:, r], torch.zeros_like(Jr[:, r]))
        assert_close(Jr.double(), expected, tol, scaled(expected, tol), f"{name}: rows minus row {r}")
        J64 = Jr.double()
        fisher = J64.transpose(1, 2) @ M @ J64
        assert_close(fisher, dense, tol, scaled(dense, tol), f"{name}: Fisher from rows minus row {r}")
        assert torch.equal(z, logits_and_jacobian(model, x, route=route)[0])
    _, Jr = logits_and_jacobian(model, x, reduce=lambda zz: zz[:, :3], route=route, reference=1)
    expected = J[:, :3] - J[:, 1:2]
    assert_close(Jr.double(), expected, tol, scaled(expected, tol), f"{name}: reduced rows minus row 1")


def test_reference_row_counts_backward_passes_and_is_checked(monkeypatch):
    """A reference row saves one backward pass; a reference outside the rows is refused by name."""
    model, x, _ = build("mlp-D40-C10", torch.float64)
    calls = []
    grad = torch.autograd.grad

    def counting(*args, **kwargs):
        calls.append(1)
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    logits_and_jacobian(model, x, route="loop")
    full = len(calls)
    calls.clear()
    logits_and_jacobian(model, x, route="loop", reference=9)
    assert (full, len(calls)) == (10, 9)
    monkeypatch.undo()
    for bad in (10, -1):
        with pytest.raises(FrmarginError, match="reference"):
            logits_and_jacobian(model, x, reference=bad)

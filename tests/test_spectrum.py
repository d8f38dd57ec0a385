"""fisher_spectrum against a dense float64 eigh of G_x on MLPs and CNNs, repeated and zero eigenvalues,
the lumped view against its own dense Fisher, orientation, batch invariance, determinism, bad input
refused before any Jacobian, and foolbox's VirtualAdversarialAttack direction (power iteration)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import reference as ref
from conftest import assert_close, make_cnn, make_inputs, make_mlp
from frmargin import fisher_spectrum
from frmargin.errors import FrmarginError
from frmargin.spectrum import spectrum_from_jacobian

EIG_TOL = 1e-8  # eigenvalues and eigenvector residuals, relative to lambda_1
VEC_TOL = 1e-8  # |v - (+-) v_dense| for eigenvalues isolated by ISOLATED (relative gap), scaled with tol
ISOLATED = 1e-4
F32_TOL = 1e-4  # a float32 model against the float64 reference of its weights
VAT_COS = 0.99
VAT_STEPS = 80  # power iterations: enough for lambda_2 / lambda_1 up to ~0.9 (measured: 1 - |cos| < 1e-8)

MODELS = {
    "mlp-D16-C5": (lambda dt: make_mlp(16, 5, 24, 2, seed=1, dtype=dt), (16,)),
    "mlp-D40-C10": (lambda dt: make_mlp(40, 10, 16, 1, seed=2, dtype=dt, scale=2.0), (40,)),
    "cnn-1x8x8-C5": (lambda dt: make_cnn(1, 8, 5, seed=4, dtype=dt), (1, 8, 8)),
    "cnn-3x8x8-C6-bn": (lambda dt: make_cnn(3, 8, 6, seed=5, dtype=dt, batchnorm=True), (3, 8, 8)),
}


def build(name: str, dtype: torch.dtype = torch.float64, B: int = 3, seed: int = 0):
    factory, shape = MODELS[name]
    model = factory(dtype)
    return model, make_inputs(shape, B, seed=seed, dtype=dtype)


def dense_top(G: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K) eigenvalues and (B, K, D) eigenvectors of dense G, largest first."""
    ev, V = torch.linalg.eigh(0.5 * (G + G.transpose(-1, -2)))
    return ev.flip(-1)[:, :k], V.flip(-1)[:, :, :k].transpose(-1, -2)


def assert_eigenpairs(values, vectors, G, what: str, tol: float = EIG_TOL) -> None:
    """values equal the dense top-K; vectors orthonormal with G v = lam v (any basis of a repeated
    eigenvalue passes); an isolated eigenvalue's vector equals the dense one up to sign."""
    B, K = values.shape
    flat = vectors.reshape(B, K, -1)
    ev, V = dense_top(G, K)
    scale = ev[:, :1]
    assert_close(values, ev, 0.0, tol * float(scale.max()), f"{what}: eigenvalues")
    assert_close(
        flat @ flat.transpose(-1, -2), torch.eye(K, dtype=torch.float64).expand(B, K, K), 0, tol, f"{what}: V V^T"
    )
    residual = (G @ flat.transpose(-1, -2)).transpose(-1, -2) - values[..., None] * flat
    assert float((residual.norm(dim=-1) / scale).max()) <= tol, f"{what}: |G v - lam v| / lam_1"
    full, _ = torch.linalg.eigh(0.5 * (G + G.transpose(-1, -2)))
    full = full.flip(-1)
    for b in range(B):
        for i in range(K):
            gaps = (full[b] - ev[b, i]).abs()
            gaps[i] = math.inf
            if float(gaps.min()) > ISOLATED * float(scale[b]):
                sign = torch.sign((flat[b, i] * V[b, i]).sum())
                err = float((flat[b, i] - sign * V[b, i]).norm())
                assert err <= VEC_TOL * tol / EIG_TOL, (
                    f"{what}: image {b} eigenvector {i} differs from the dense one by {err:.3g}"
                )


@pytest.mark.parametrize("name", list(MODELS))
def test_equals_dense_eigh_float64(name: str) -> None:
    model, x = build(name)
    C = model(x[:1]).shape[-1]
    values, vectors = fisher_spectrum(model, x, k=C - 1)
    assert values.dtype == vectors.dtype == torch.float64
    assert values.shape == (3, C - 1) and vectors.shape == (3, C - 1, *x.shape[1:])
    assert_eigenpairs(values, vectors, ref.fisher(model, x), name)


@pytest.mark.parametrize("name", ["mlp-D40-C10", "cnn-3x8x8-C6-bn"])
def test_float32_model_against_its_float64_reference(name: str) -> None:
    model, x = build(name, torch.float32)
    values, vectors = fisher_spectrum(model, x, k=3)
    assert values.dtype == torch.float64
    assert_eigenpairs(values, vectors, ref.fisher(model, x), name + "-f32", tol=F32_TOL)


def orthonormal_linear(C: int, D: int, logits: list[float]) -> tuple[nn.Module, torch.Tensor]:
    """z = W x + b, W with orthonormal rows, b = ``logits``; at x = 0 the probabilities are softmax(b)."""
    gen = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(D, C, generator=gen, dtype=torch.float64))
    model = nn.Linear(D, C).double().eval()
    with torch.no_grad():
        model.weight.copy_(Q.T)
        model.bias.copy_(torch.tensor(logits, dtype=torch.float64))
    return model, torch.zeros(1, D, dtype=torch.float64)


def test_repeated_eigenvalues() -> None:
    """Uniform p: G = W^T M W has one eigenvalue 1/C of multiplicity C - 1; logits (2, 0, 0, 0):
    the three equal probabilities r give a double eigenvalue r. Any orthonormal basis of the
    eigenspace is right: checked by G v = lam v, orthonormality and the eigenspace's projector."""
    model, x = orthonormal_linear(4, 8, [0.0, 0.0, 0.0, 0.0])
    values, vectors = fisher_spectrum(model, x, k=3)
    assert_close(values, torch.full((1, 3), 0.25, dtype=torch.float64), 0, 1e-14, "uniform: eigenvalues")
    G = ref.fisher(model, x)
    assert_eigenpairs(values, vectors, G, "uniform")
    dense = torch.linalg.eigh(G).eigenvectors[0, :, -3:]
    flat = vectors.reshape(3, -1).T
    assert_close(flat @ flat.T, dense @ dense.T, 0, EIG_TOL, "uniform: eigenspace projector")

    model, x = orthonormal_linear(4, 8, [2.0, 0.0, 0.0, 0.0])
    values, vectors = fisher_spectrum(model, x, k=3)
    r = float(torch.softmax(torch.tensor([2.0, 0.0, 0.0, 0.0], dtype=torch.float64), 0)[1])
    assert sum(abs(float(v) - r) < 1e-12 for v in values[0]) == 2, values
    assert_eigenpairs(values, vectors, ref.fisher(model, x), "double")


class OneFeature(nn.Module):
    """Logits c * (a . x) + b: every logit moves along a alone, so G_x has rank 1."""

    def __init__(self, D: int, C: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(4)
        self.a = nn.Parameter(torch.randn(D, generator=gen, dtype=torch.float64))
        self.c = nn.Parameter(torch.linspace(-1.0, 1.5, C, dtype=torch.float64))
        self.b = nn.Parameter(0.3 * torch.randn(C, generator=gen, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.a)[:, None] * self.c + self.b


def test_zero_eigenvalues_past_the_rank() -> None:
    model = OneFeature(6, 4).eval()
    x = make_inputs((6,), 2, seed=1)
    values, vectors = fisher_spectrum(model, x, k=3)
    assert (values[:, 0] > 0).all() and (values[:, 1:] == 0).all()
    assert_eigenpairs(values, vectors, ref.fisher(model, x), "rank 1")


def test_orientation_lowers_the_predicted_class() -> None:
    """v . grad log p_top(x) <= 0 for every returned vector (strictly, on these generic inputs)."""
    for name in ("mlp-D40-C10", "cnn-3x8x8-C6-bn"):
        model, x = build(name)
        vectors = fisher_spectrum(model, x, k=4).vectors
        xg = x.clone().requires_grad_(True)
        logp = torch.log_softmax(model(xg), -1)
        top = logp.detach().argmax(-1)
        (grad,) = torch.autograd.grad(logp.gather(1, top[:, None]).sum(), xg)
        slope = (vectors.flatten(2) * grad.flatten(1)[:, None, :]).sum(-1)
        assert (slope < 0).all(), f"{name}: slopes {slope}"


class Lumped(nn.Module):
    """The reduced logits of one input: its kept classes and logsumexp of the rest (fixed classes)."""

    def __init__(self, model: nn.Module, keep: list[int], C: int) -> None:
        super().__init__()
        self.model, self.keep = model, keep
        self.rest = [c for c in range(C) if c not in keep]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return torch.cat([z[:, self.keep], torch.logsumexp(z[:, self.rest], -1, keepdim=True)], -1)


def test_lumped_view_equals_its_dense_fisher_and_is_below_the_full_one() -> None:
    model, x = build("mlp-D40-C10")
    m = 3
    values, vectors = fisher_spectrum(model, x, k=m, top_classes=m)
    full, _ = fisher_spectrum(model, x, k=m)
    assert (values <= full * (1 + 1e-12)).all(), "the coarse distribution's Fisher is at most the full one"
    with torch.no_grad():
        order = model(x).argsort(-1, descending=True)
    for b in range(x.shape[0]):
        reduced = Lumped(model, order[b, :m].tolist(), 10).eval()
        G = ref.fisher(reduced, x[b : b + 1])
        assert_eigenpairs(values[b : b + 1], vectors[b : b + 1], G, f"lumped image {b}")
    same, _ = fisher_spectrum(model, x, k=m, top_classes=9)  # M >= C - 1: every class
    assert torch.equal(same, full)


def test_batch_invariant_and_deterministic() -> None:
    model, x = build("cnn-3x8x8-C6-bn", B=4)
    values, vectors = fisher_spectrum(model, x, k=2)
    again = fisher_spectrum(model, x, k=2)
    assert torch.equal(values, again.values) and torch.equal(vectors, again.vectors)
    for b in range(4):
        one = fisher_spectrum(model, x[b : b + 1], k=2)
        assert_close(one.values[0], values[b], 1e-12, 0, f"image {b} alone: values")
        assert_close(one.vectors[0], vectors[b], 0, 1e-10, f"image {b} alone: vectors")


def test_spectrum_from_jacobian_of_rows_in_other_coordinates() -> None:
    """Rows J B (a basis B of allowed perturbations) give the spectrum of B^T G B."""
    gen = torch.Generator().manual_seed(5)
    J = torch.randn(2, 5, 30, generator=gen, dtype=torch.float64)
    p = torch.softmax(torch.randn(2, 5, generator=gen, dtype=torch.float64), -1)
    basis = torch.linalg.qr(torch.randn(30, 7, generator=gen, dtype=torch.float64)).Q
    M = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    G = basis.T @ J.transpose(-1, -2) @ M @ J @ basis
    values, vectors = spectrum_from_jacobian(J @ basis, p, 4)
    assert_eigenpairs(values, vectors, G, "B^T G B")


# ----------------------------------------------------------------------------- bad input


def _bad_cases():
    model, x = build("mlp-D16-C5", B=2)
    nan = x.clone()
    nan[1, 3] = float("nan")
    trained = make_mlp(16, 5, 24, 2, seed=1).train()
    soft = nn.Sequential(make_mlp(16, 5, 24, 2, seed=1), nn.Softmax(-1)).eval()
    return (
        model,
        x,
        {
            "k=0": (dict(k=0), r"argument 'k'.*got 0.*\[1, 4\]"),
            "k=C": (dict(k=5), r"argument 'k'.*got 5.*\[1, 4\]"),
            "k bool": (dict(k=True), r"argument 'k'"),
            "k float": (dict(k=1.5), r"argument 'k'"),
            "k > top_classes": (dict(k=3, top_classes=2), r"argument 'k'.*\[1, 2\].*top_classes=2"),
            "top_classes=1": (dict(top_classes=1), r"argument 'top_classes'"),
            "route": (dict(route="fast"), r"argument 'route'"),
            "train mode": (dict(model=trained), r"argument 'model'.*train mode"),
            "probabilities": (dict(model=soft), r"argument 'model'.*probabilities"),
            "non-finite x": (dict(x=nan), r"argument 'x'.*NaN"),
            "integer x": (dict(x=x.long()), r"argument 'x'.*dtype"),
            "dtype mismatch": (dict(x=x.float()), r"argument 'x'.*dtype"),
        },
    )


@pytest.mark.parametrize("case", list(_bad_cases()[2]))
def test_bad_input_is_refused_before_any_jacobian(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, cases = _bad_cases()
    change, pattern = cases[case]

    def no_work(*args, **kwargs):
        raise AssertionError("a Jacobian was computed before the arguments were checked")

    monkeypatch.setattr("frmargin.spectrum.logits_and_jacobian", no_work)
    kwargs = {"model": model, "x": x, "k": 1, **change}
    with pytest.raises(FrmarginError, match=pattern):
        fisher_spectrum(kwargs.pop("model"), kwargs.pop("x"), **kwargs)


# ----------------------------------------------------------------------------- foolbox VAT


@pytest.mark.parametrize("name", ["mlp-D16-C5", "mlp-D40-C10", "cnn-3x8x8-C6-bn"])
def test_top_eigenvector_is_foolbox_virtual_adversarial_direction(name: str) -> None:
    """VAT's power iteration on the Hessian of KL(p(x) || p(x + d)), which is G_x at d = 0, converges
    to v_1: after VAT_STEPS iterations (with lambda_2 / lambda_1 up to 0.88 here) |cos| > 0.99."""
    fb = pytest.importorskip("foolbox")
    model, x = build(name, B=4)
    values, vectors = fisher_spectrum(model, x, k=2)
    assert float((values[:, 1] / values[:, 0]).max()) < 0.9
    torch.manual_seed(0)  # VAT's random start
    fmodel = fb.PyTorchModel(model, bounds=(-100.0, 100.0))
    y = model(x).argmax(1)
    eps = 1e-3
    x_adv = fb.attacks.VirtualAdversarialAttack(steps=VAT_STEPS, xi=1e-6).run(
        fmodel, x, fb.criteria.Misclassification(y), epsilon=eps
    )
    d = (x_adv - x).flatten(1) / eps
    cos = (d * vectors[:, 0].flatten(1)).sum(1).abs() / d.norm(dim=1)
    assert (cos > VAT_COS).all(), cos

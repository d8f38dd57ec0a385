"""The top eigenpairs of the data-space Fisher G_x: ``fisher_spectrum`` (exact, from the C x C matrix
S = L^T J J^T L) against a dense ``eigh`` of G_x, against power iteration, and per image on zoo models.

- ``dense``: small tanh CNNs on 3 x s x s inputs (D = 3 s^2, C = 10), float64, one image: seconds
  of ``fisher_spectrum`` (all C - 1 pairs) and of building G_x = J^T M J and ``eigh`` on it, with
  the largest eigenvalue difference (relative to lambda_1) and 1 - |cos| of the top vectors.
- ``power``: a float64 copy of a CIFAR model, ``images`` images at once: power iteration with
  Fisher matvecs (one jvp and one vjp each, ``DataFisher.matvec``) from a seeded random start,
  until 1 - |cos(v, v_1)| <= ``tol`` for every image (v_1 from ``fisher_spectrum``); iterations
  and seconds beside ``fisher_spectrum``'s on the same images. The rate is lambda_2 / lambda_1 per
  iteration, so the iterations depend on each image's gap (median and largest reported).
- ``vat``: foolbox's ``VirtualAdversarialAttack`` on the same float64 copies: its direction after
  ``vat_steps`` power iterations on the Hessian of the KL divergence (G_x at x, by finite
  differences with xi = 1e-6), the smallest |cos| with v_1 over the images.
- ``per_image``: ``fisher_spectrum`` (k = 1) per image on ResNet-20 (float32, a batch of
  ``images``) and on MobileNetV2 (ImageNet, 224 x 224, one image) with every class and with the
  lumped view of ``top_classes``; seconds per image and in forward passes of the same batch.
"""

from __future__ import annotations

import time

import torch

import _common as cm
from harness import Context, Output, benchmark, main


@benchmark(
    name="spectrum",
    title="Exact top eigenpairs of G_x from the C x C matrix, against a dense eigh, power iteration, per image",
    units={
        "part": "",
        "model": "",
        "setting": "",
        "D": "input dimensions",
        "C": "classes",
        "k": "eigenpairs",
        "images": "count",
        "spectrum_s": "s",
        "other_s": "s",
        "other_over_spectrum": "ratio",
        "tol": "1 - |cos|",
        "iterations_median": "matvecs",
        "iterations_max": "matvecs",
        "eig_rel_error": "relative",
        "vec_error": "1 - |cos|",
        "s_per_image": "s",
        "in_forwards": "forward passes",
        "vat_min_cos": "|cos|",
    },
    key=("part", "model", "setting"),
    sizes={
        "smoke": {
            "dense_sizes": "4,8",
            "power_models": "resnet20",
            "tols": "1e-4",
            "images": 2,
            "max_iterations": 50,
            "vat_steps": "2",
            "per_image_models": "resnet20",
            "top_classes": "",
            "repeats": 1,
        },
        "full": {
            "dense_sizes": "8,16,24",
            "power_models": "resnet20,cnn-a-mix",
            "tols": "1e-4,1e-8",
            "images": 8,
            "max_iterations": 2000,
            "vat_steps": "1,2,5,10,20,40",
            "per_image_models": "resnet20,mobilenetv2-imagenet",
            "top_classes": "20",
            "repeats": 3,
        },
    },
)
def spectrum(ctx: Context) -> Output:
    p = ctx.params
    rows = [dense_row(s, p.repeats) for s in cm.numbers(p.dense_sizes)]
    for name in cm.names(p.power_models):
        rows += power_rows(name, p.images, cm.numbers(p.tols, float), p.max_iterations)
        rows += vat_rows(name, p.images, cm.numbers(p.vat_steps))
    for name in cm.names(p.per_image_models):
        rows += per_image_rows(name, p.images, cm.numbers(p.top_classes), p.repeats)
    notes = (
        "dense: one image, float64, G_x built from the Jacobian rows then torch.linalg.eigh; power: float64 "
        "copies, a seeded Gaussian start, iterations until every image's top vector is within tol of v_1; "
        "other_s is the dense eigh (dense), the power iteration (power) or foolbox VAT (vat); per_image: float32 models."
    )
    return Output(rows, notes)


def dense_row(size: int, repeats: int) -> dict:
    from frmargin.fisher import DataFisher
    from frmargin.spectrum import fisher_spectrum

    conftest = cm.tests_helper("conftest")
    model = conftest.make_cnn(3, size, 10, seed=size, dtype=torch.float64, scale=0.5)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size), dtype=torch.float64)
    ours = cm.timeit(lambda: fisher_spectrum(model, x, k=9), repeats=repeats)["median"]

    def dense() -> tuple[torch.Tensor, torch.Tensor]:
        ev, V = torch.linalg.eigh(DataFisher(model, x).dense())
        return ev.flip(-1), V.flip(-1)

    theirs = cm.timeit(dense, repeats=repeats)["median"]
    values, vectors = fisher_spectrum(model, x, k=9)
    ev, V = dense()
    err = float(((values[0] - ev[0, :9]).abs() / ev[0, 0]).max())
    cos = float((vectors[0, 0].flatten() @ V[0, :, 0]).abs())
    D = 3 * size * size
    print(f"[spectrum] dense D={D}: ours {ours:.4f} s, eigh {theirs:.3f} s, error {err:.2g}", flush=True)
    return {"part": "dense", "model": f"cnn-3x{size}x{size}", "setting": "k=9", "D": D, "C": 10, "k": 9, "images": 1,
            "spectrum_s": ours, "other_s": theirs, "other_over_spectrum": theirs / ours, "eig_rel_error": err,
            "vec_error": max(0.0, 1 - cos)}  # fmt: skip


def power_rows(name: str, n: int, tols: list[float], max_iterations: int) -> list[dict]:
    from frmargin.fisher import DataFisher
    from frmargin.spectrum import fisher_spectrum

    model = cm.load_model(name).double()
    x, _ = cm.correct_images(cm.load_model(name), "cifar10", n)
    x = x.double()
    ours = cm.timeit(lambda: fisher_spectrum(model, x, k=1), repeats=1)["median"]
    v1 = fisher_spectrum(model, x, k=1).vectors[:, 0].flatten(1)
    rows = []
    for tol in tols:
        F = DataFisher(model, x)
        v = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        F.matvec(v)  # warm-up (and the logits F caches), untimed
        done = torch.full((n,), max_iterations + 1)
        t0 = time.perf_counter()
        for it in range(1, max_iterations + 1):
            v = F.matvec(v)
            v = v / v.flatten(1).norm(dim=1).reshape(-1, *[1] * (x.ndim - 1))
            close = 1 - (v.flatten(1) * v1).sum(1).abs() <= tol
            done = torch.where(close & (done > it), torch.full_like(done, it), done)
            if bool((done <= max_iterations).all()):
                break
        seconds = time.perf_counter() - t0
        reached = done <= max_iterations
        print(f"[spectrum] power {name} tol {tol:g}: {done.tolist()} iterations, {seconds:.2f} s", flush=True)
        rows.append({"part": "power", "model": name, "setting": f"tol={tol:g}", "D": x[0].numel(), "C": 10, "k": 1, "images": n,
                     "spectrum_s": ours, "other_s": seconds if bool(reached.all()) else None,
                     "other_over_spectrum": seconds / ours if bool(reached.all()) else None, "tol": tol,
                     "iterations_median": float(done.float().median()), "iterations_max": int(done.max())})  # fmt: skip
    return rows


def vat_rows(name: str, n: int, steps: list[int]) -> list[dict]:
    from frmargin.baselines import require_foolbox
    from frmargin.spectrum import fisher_spectrum

    fb = require_foolbox()
    model = cm.load_model(name).double()
    x, y = cm.correct_images(cm.load_model(name), "cifar10", n)
    x = x.double()
    v1 = fisher_spectrum(model, x, k=1).vectors[:, 0].flatten(1)
    fmodel = fb.PyTorchModel(model, bounds=(-1e3, 1e3))  # no clipping: the direction alone
    rows = []
    for s in steps:
        torch.manual_seed(0)  # VAT's random start
        attack = fb.attacks.VirtualAdversarialAttack(steps=s, xi=1e-6)
        t0 = time.perf_counter()
        d = (attack.run(fmodel, x, fb.criteria.Misclassification(y), epsilon=1e-3) - x).flatten(1)
        seconds = time.perf_counter() - t0
        cos = float(((d * v1).sum(1).abs() / d.norm(dim=1)).min())
        print(f"[spectrum] vat {name} steps {s}: min |cos| {cos:.8f}", flush=True)
        rows.append({"part": "vat", "model": name, "setting": f"steps={s}", "D": x[0].numel(), "C": 10, "k": 1,
                     "images": n, "other_s": seconds, "iterations_median": s, "vat_min_cos": cos})  # fmt: skip
    return rows


def per_image_rows(name: str, n: int, top_classes: list[int], repeats: int) -> list[dict]:
    from frmargin.spectrum import fisher_spectrum

    model = cm.load_model(name)
    imagenet = "imagenet" in name
    data = "imagenet-sample" if imagenet else "cifar10"
    x, _, _ = cm.correct_subset(model, *cm.first_images(data, 4 * n + 8), 1 if imagenet else n)
    with torch.no_grad():
        C = int(model(x[:1]).shape[-1])
        forward = cm.timeit(lambda: model(x), repeats=max(repeats, 3))["median"]
    rows = []
    for m in [None, *[t for t in top_classes if t < C - 1]]:
        reps = 1 if imagenet and m is None else repeats
        seconds = cm.timeit(lambda m=m: fisher_spectrum(model, x, k=1, top_classes=m), warmup=0, repeats=reps)
        s = seconds["median"]
        setting = "all classes" if m is None else f"top_classes={m}"
        print(f"[spectrum] per image {name} {setting}: {s / len(x):.3f} s per image", flush=True)
        rows.append({"part": "per_image", "model": name, "setting": setting, "D": x[0].numel(), "C": C if m is None else m + 1,
                     "k": 1, "images": len(x), "spectrum_s": s, "s_per_image": s / len(x),
                     "in_forwards": s / forward})  # fmt: skip
    return rows


if __name__ == "__main__":
    raise SystemExit(main(spectrum))

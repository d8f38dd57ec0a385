"""A synthetic run folder with plausible values, for tests of the analysis and report layers.

Softmax outputs are drawn per image; the paths follow the closed forms of docs/method.md: the path
toward k is shielded by the largest c with p_c > (p_y + p_k) / 2, and its length is the exact
natural-gradient flow length. Vehicle classes get larger logit gaps (robust) and are more often the
runner-up (shields), so the paper's claims 1 to 3 hold; baseline L2 grows with the FR margin, so
claim 4 holds too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
N_CLASSES = len(CLASS_NAMES)
VEHICLES = (0, 1, 8, 9)
# Mean logit gap between the true class and its runner-up, per class (larger = more robust).
GAP_SCALE = np.array([2.6, 2.4, 1.0, 0.8, 1.3, 1.0, 1.2, 1.7, 2.8, 2.5])
VEHICLE_RUNNER_UP = 0.75  # probability that an image's runner-up class is a vehicle
P_BUDGET, P_STALLED = 0.03, 0.01
P_WRONG_HIT = {"fisher": 0.02, "euclidean": 0.15}
L2_PER_FR = 0.35
INPUT_DIM = 3072
DATA_CAVEAT = "data: JPEG (quality ~75) copy of the CIFAR-10 test split, not the official images"


def lower_bound(p: np.ndarray, y: int) -> float:
    """Simplex lower bound LB (docs/method.md)."""
    runner_up = np.max(np.delete(p, y))
    return 2 * math.asin((math.sqrt(p[y]) - math.sqrt(runner_up)) / math.sqrt(2))


def predicted_path(p: np.ndarray, y: int, k: int) -> tuple[float, int]:
    """Closed-form NG length and first class hit of the path from y toward k (docs/method.md, the exact flow)."""
    py, pk = p[y], p[k]
    r = math.sqrt(py + pk)
    theta0 = math.atan2(math.sqrt(py), math.sqrt(pk))
    shields = [c for c in range(len(p)) if c not in (y, k) and p[c] > (py + pk) / 2]
    if not shields:
        return 2 * r * (theta0 - math.pi / 4), k
    c = max(shields, key=lambda i: p[i])
    theta1 = math.atan2(math.sqrt(p[c]), math.sqrt(py + pk - p[c]))
    return 2 * r * (theta0 - theta1), c


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _draw_outputs(n_images: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.permutation(np.arange(n_images) % N_CLASSES)
    probs = np.empty((n_images, N_CLASSES))
    for i, y in enumerate(labels):
        z = rng.normal(0.0, 0.7, N_CLASSES)
        pool = [c for c in (VEHICLES if rng.random() < VEHICLE_RUNNER_UP else range(N_CLASSES)) if c != y]
        runner_up = rng.choice(pool)
        z[y] = 6.0
        z[runner_up] = 6.0 - GAP_SCALE[y] * rng.uniform(0.15, 1.8)
        if rng.random() < 0.08:  # a misclassified image
            z[runner_up] = 6.5
        probs[i] = _softmax(z)
    return labels, probs


def write_synthetic_run(
    directory: Path,
    n_images: int = 20,
    seed: int = 0,
    with_baselines: bool = True,
    metric: str = "fisher",
    method: str = "converged",
    data_source: str = "synthetic softmax outputs (JPEG copy of the CIFAR-10 test set)",
    chunked: bool = False,
    data_caveat: str | None = DATA_CAVEAT,
    spectral: bool = False,
) -> Path:
    """Write paths.parquet, images.parquet, run.json (and baselines.parquet) under ``directory``.

    The same ``seed`` gives the same images and outputs for both metrics, so a Fisher and a
    Euclidean run can be compared pair by pair. With ``spectral`` the baselines hold the line
    attacks too (ossa, tssa, random) and the columns a run with a spectral attack writes: model
    evaluations, lambda_1 (larger for smaller margins) and lambda_1 at each attack's point.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels, probs = _draw_outputs(n_images, rng)
    noise = np.random.default_rng([seed, 0 if metric == "fisher" else 1])
    predictions = probs.argmax(1)
    test_index = np.sort(rng.choice(10_000, size=n_images, replace=False))
    images = pd.DataFrame(
        {
            "image_index": np.arange(n_images),
            "test_index": test_index,
            "label": labels,
            "prediction": predictions,
            "correct": labels == predictions,
            "confidence": probs.max(1),
            "lower_bound": [lower_bound(p, int(y)) for p, y in zip(probs, predictions)],
        }
    )
    rows, base_rows = [], []
    for i in np.flatnonzero(images["correct"]):
        p, y = probs[i], int(labels[i])
        lb = images.at[i, "lower_bound"]
        image_l2 = []
        for k in range(N_CLASSES):
            if k == y:
                continue
            length, hit = predicted_path(p, y, k)
            draw = noise.random()
            status = "budget" if draw < P_BUDGET else "stalled" if draw < P_BUDGET + P_STALLED else "ok"
            success = status == "ok"
            first_hit = hit
            if success and noise.random() < P_WRONG_HIT[metric]:
                first_hit = int(noise.choice([c for c in range(N_CLASSES) if c != y]))
            scale = 1.0 if metric == "fisher" else 1.2
            traced = max(lb, length * scale * math.exp(noise.normal(0.001, 0.002)))
            l2 = traced * L2_PER_FR * math.exp(noise.normal(0, 0.15))
            steps = math.ceil(traced / 0.1) + int(noise.integers(0, 3))
            rows.append(
                {
                    "image_index": i,
                    "source": y,
                    "target": k,
                    "method": method,
                    "metric": metric,
                    "success": success,
                    "status": status,
                    "first_hit": first_hit if success else -1,
                    "shielded": success and first_hit != k,
                    "fr_length": traced if success else np.nan,
                    "predicted_length": length,
                    "predicted_first_hit": hit,
                    "lower_bound": lb,
                    "confidence": p[y],
                    "l2": l2 if success else np.nan,
                    "linf": 3 * l2 / math.sqrt(INPUT_DIM) if success else np.nan,
                    "steps": steps,
                    "jacobian_evals": steps + 2,
                    "forward_evals": steps + 12,
                    "fr_length_target": np.nan,
                    "visited": "",
                }
            )
            if success:
                image_l2.append(l2)
        margin_l2 = min(image_l2) if image_l2 else np.nan
        base_rows += _baseline_rows(i, lb, margin_l2, noise, spectral)
    paths = pd.DataFrame(rows)
    if chunked:
        folder = directory / "paths.parquet"
        folder.mkdir(exist_ok=True)
        half = len(paths) // 2
        paths.iloc[:half].to_parquet(folder / "part-000.parquet", index=False)
        paths.iloc[half:].to_parquet(folder / "part-001.parquet", index=False)
    else:
        paths.to_parquet(directory / "paths.parquet", index=False)
    images.to_parquet(directory / "images.parquet", index=False)
    if with_baselines:
        pd.DataFrame(base_rows).to_parquet(directory / "baselines.parquet", index=False)
    n_correct = int(images["correct"].sum())
    info = {
        "model": "synthetic-resnet20",
        "data": "cifar10",
        "data_source": data_source,
        "data_caveat": data_caveat,
        "class_names": CLASS_NAMES,
        "method": method,
        "metric": metric,
        "until": "first",
        "box": True,
        "images": n_images,
        "seed": seed,
        "accuracy": n_correct / n_images,
        "n_correct": n_correct,
        "timing": {"trace": 12.5, "baselines": 3.25, "total": 16.0},
        "versions": {"frmargin": "0.1.0", "torch": "2.13.0"},
        "tracer_options": {"eta": 0.1, "damping": "relative", "lam": 1e-3, "max_steps": 500},
        "an_unknown_key": {"nested": [1, 2]},
        # bookkeeping that differs between any two runs, as a real run.json has it
        "fingerprint": f"{metric}-{method}-{seed}",
        "config": {
            "metric": metric,
            "method": method,
            "baselines": (["deepfool", "fmn", *SPECTRAL_FACTORS] if spectral else ["deepfool"])
            if with_baselines
            else [],
        },
        "sessions": [{"seconds": 16.0, "paths_traced": len(rows), "world_size": 1}],
        "status": "complete",
        "world_size": 1,
        "device": "cpu",
    }
    (directory / "run.json").write_text(json.dumps(info, indent=2))
    return directory


#: attack -> its distance over the image's L2 scale (random: along a line, far and often failing)
SPECTRAL_FACTORS = {"ossa": 1.6, "tssa": 1.3, "random": 12.0}


def _baseline_rows(i: int, lb: float, margin_l2: float, noise: np.random.Generator, spectral: bool) -> list[dict]:
    factors = {"deepfool": 0.9, "fmn": 0.8, **(SPECTRAL_FACTORS if spectral else {})}
    lam = (lb / margin_l2) ** 2 * math.exp(noise.normal(0, 0.5)) if spectral else np.nan
    rows = []
    for attack, factor in factors.items():
        failed = noise.random() < (0.2 if attack == "random" else 0.03)
        row = {
            "image_index": i,
            "attack": attack,
            "l2": math.inf if failed else margin_l2 * factor * math.exp(noise.normal(0, 0.1)),
            "status": "failed" if failed else "ok",
        }
        if spectral:
            row.update(
                forward_passes=float(noise.integers(40, 300)),
                backward_passes=float(noise.integers(0, 400)),
                lambda_1=lam,
                lambda_1_adv=np.nan if failed else lam * 10 ** noise.uniform(1, 5),
            )
        rows.append(row)
    return rows


def write_many_class_run(
    directory: Path, n_classes: int = 1000, n_images: int = 120, targets_per_image: int = 4, seed: int = 0
) -> Path:
    """A run folder with ``n_classes`` classes (ImageNet-sized), paths toward a few random targets
    per image, closed-form lengths and first hits (as ``write_synthetic_run``), no baselines."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_images)
    rows, image_rows = [], []
    for i, y in enumerate(labels):
        z = rng.normal(0.0, 1.0, n_classes)
        z[y] = 8.0 + rng.uniform(0, 3)
        z[rng.choice(n_classes, 3, replace=False)] += rng.uniform(4, 7.5, 3)
        p = _softmax(z)
        y = int(p.argmax())
        lb = lower_bound(p, y)
        image_rows.append(
            {
                "image_index": i,
                "test_index": i,
                "label": y,
                "prediction": y,
                "correct": True,
                "confidence": p[y],
                "lower_bound": lb,
            }
        )
        runner_ups = [int(c) for c in np.argsort(p)[::-1] if c != y][:2]
        others = [c for c in rng.choice(n_classes, targets_per_image + 2, replace=False) if c != y]
        for k in dict.fromkeys(runner_ups + others[: max(targets_per_image - 2, 0)]):
            length, hit = predicted_path(p, y, int(k))
            traced = max(lb, length)
            rows.append(
                {
                    "image_index": i,
                    "source": y,
                    "target": int(k),
                    "method": "converged",
                    "metric": "fisher",
                    "success": True,
                    "status": "ok",
                    "first_hit": hit,
                    "shielded": hit != k,
                    "fr_length": traced,
                    "predicted_length": length,
                    "predicted_first_hit": hit,
                    "lower_bound": lb,
                    "confidence": p[y],
                    "l2": traced * L2_PER_FR,
                    "linf": traced * L2_PER_FR / 10,
                    "steps": math.ceil(traced / 0.1),
                    "jacobian_evals": 1,
                    "forward_evals": 1,
                    "fr_length_target": np.nan,
                    "visited": "",
                }
            )
    pd.DataFrame(rows).to_parquet(directory / "paths.parquet", index=False)
    pd.DataFrame(image_rows).to_parquet(directory / "images.parquet", index=False)
    info = {
        "model": "synthetic-imagenet",
        "data": "synthetic-1000",
        "data_source": "synthetic softmax outputs",
        "class_names": [f"n{c:05d}" for c in range(n_classes)],
        "method": "converged",
        "metric": "fisher",
        "until": "first_flip",
        "box": [0.0, 1.0],
        "images": n_images,
        "seed": seed,
        "accuracy": 1.0,
        "n_correct": n_images,
        "status": "complete",
    }
    (directory / "run.json").write_text(json.dumps(info, indent=2))
    return directory

"""What the images are whose in-box margin estimate lies more than 1% above LB: a diagnosis.

    python docs/results/box_diagnosis.py STUDY_DIR MODEL [--control N] [--out FILE.csv]

For each such image of MODEL's box run (and, with ``--control N``, the first N images at or below
1.01, to compare; the default file is ``docs/results/data/study/box_diagnosis_MODEL.csv``) (``STUDY_DIR/study_box.csv``, written by the study
report) it records, besides the study's columns (LB, the least traced and estimated in-box
length over LB, the unconstrained flow's least length over LB and the status of its path toward
the runner-up class):

- ``p1``, ``p2``: the two largest probabilities (a near-tie has p1 close to p2);
- ``at_bound``: the share of pixels at 0 or 1 in the image (where the box can bind at the start);
- ``conditioning``: sigma_(C-1) / sigma_1 of the centred logit Jacobian (rank C-1 where it is
  not 0; a small value: one direction of the logits costs that much more input movement);
- ``flow_over_lb``, ``flow_min_conditioning``, ``flow_leaves_box``: the exact natural-gradient
  flow toward the runner-up class (p_1 falls and p_2 rises at equal rates, the closed form's
  path), integrated in float64 with 400 steps dx = J_c^+ dz of FR length LB / 400 without the
  box: its realized FR length over LB, the least conditioning met and how far it leaves [0, 1].

Every value comes from the model and the official test image; nothing is fitted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from torch.func import jacrev

STEPS = 400


def _centred_jacobian(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    jac = jacrev(lambda xx: model(xx[None])[0])(x).reshape(-1, x.numel())
    return jac - jac.mean(0, keepdim=True)


def exact_flow(model: torch.nn.Module, x0: torch.Tensor) -> dict:
    """The closed-form flow toward the runner-up class, by small exact steps (see the module)."""
    from frmargin.geometry import fisher_rao_distance, margin_lower_bound

    with torch.no_grad():
        p = torch.softmax(model(x0[None])[0], -1)
    y, k = (int(c) for c in p.argsort(descending=True)[:2])
    lb = float(margin_lower_bound(p[None]))
    x, length, least, outside = x0.clone(), 0.0, float("inf"), 0.0
    for _ in range(4 * STEPS):
        jac = _centred_jacobian(model, x)
        s = torch.linalg.svdvals(jac)
        least = min(least, float(s[-2] / s[0]))
        dz = torch.zeros_like(p)
        dz[k], dz[y] = 1 / p[k], -1 / p[y]
        dp = p * (dz - (p * dz).sum())
        dx = torch.linalg.pinv(jac, rtol=1e-10) @ (dz - dz.mean())
        x_new = x + (lb / STEPS / torch.sqrt((dp**2 / p).sum())) * dx.reshape(x.shape)
        outside = max(outside, float((-x_new).clamp_min(0).max()), float((x_new - 1).clamp_min(0).max()))
        with torch.no_grad():
            p_new = torch.softmax(model(x_new[None])[0], -1)
        length += float(fisher_rao_distance(p[None], p_new[None])[0])
        x, p = x_new, p_new
        if int(p.argmax()) != y:
            break
    return {"flow_over_lb": length / lb, "flow_min_conditioning": least, "flow_leaves_box": outside}


def diagnose(study: Path, model_name: str, threshold: float = 1.01, control: int = 0) -> pd.DataFrame:
    """The images of ``model_name`` above ``threshold`` (``flagged``), and for comparison the first
    ``control`` images (by index) at or below it."""
    import frmargin

    box = pd.read_csv(study / "study_box.csv")
    box = box[box["model"] == model_name].assign(flagged=lambda f: f["estimate_over_lb"] > threshold)
    images = pd.concat([box[box["flagged"]], box[~box["flagged"]].sort_values("image_index").head(control)])
    model = frmargin.load_model(model_name).eval().double()
    data = frmargin.load_dataset("cifar10")
    rows = []
    for row in images.itertuples():
        x0 = data.images[int(row.image_index)].double()
        with torch.no_grad():
            p = torch.softmax(model(x0[None])[0], -1).sort(descending=True).values
        s = torch.linalg.svdvals(_centred_jacobian(model, x0))
        rows.append({**row._asdict(), "p1": float(p[0]), "p2": float(p[1]),
                     "at_bound": float(((x0 == 0) | (x0 == 1)).double().mean()),
                     "conditioning": float(s[-2] / s[0]), **exact_flow(model, x0)})  # fmt: skip
    return pd.DataFrame(rows).drop(columns=["Index"], errors="ignore")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", type=Path, help="a study folder, after its report")
    parser.add_argument("model", help="a model of the study with a box run")
    parser.add_argument("--control", type=int, default=0, help="also this many images at or below 1.01, to compare")
    parser.add_argument("--out", type=Path, help="the CSV to write (default: the study set's box_diagnosis_MODEL.csv)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = args.out or Path(__file__).resolve().parent / "data" / "study" / f"box_diagnosis_{args.model}.csv"
    diagnose(args.study, args.model, control=args.control).to_csv(out, index=False, float_format="%.6g")
    return out


if __name__ == "__main__":
    print(main())

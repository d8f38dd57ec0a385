"""Accuracy vs cost of the converged tracer on ResNet-20 / CIFAR-10.

For the default accuracy options and a few variations (eta, rtol, logit_step), trace the paths
from N correctly classified ``cifar10-exact`` images to all 9 other classes and report, per
setting:

- accuracy against the closed form ``predicted_path`` (exact for the unconstrained flow):
  relative length error (median, p90, max), first-hit agreement, share of paths >= the lower
  bound ``margin_lower_bound``;
- cost per path in machine-independent units: Jacobian evaluations (``PathResult.jacobian_evals``,
  one = the C logit-gradient rows at one point), forward passes, accepted steps;
- wall seconds per path, and the tracer overhead: the tracer's wall time per accepted path-step
  divided by the time of one Jacobian evaluation of one point in a batched call of the batch
  size the step was taken at (measured separately, warm-up + median). 1.0 would mean the tracer
  costs exactly one Jacobian per accepted step; the excess is forward passes (corrector, root
  finding) and linear algebra; the shared first Jacobian of an image's 9 paths pulls it down;
- the L2 distance at the class change against a tight reference trace (``--reference``, default
  eta=0.1, logit_step=0.25, rtol=0.005, atol=1e-4): it depends on the input-space path, which
  larger steps approximate by chords (median relative difference and mean signed bias).

Usage: .venv/bin/python benchmarks/bench_tracer.py [--images 2] [--settings default,eta=0.3,...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as cm

NAME = "bench_tracer"
SETTINGS = {
    "default": {},
    "eta=0.3": {"eta": 0.3},
    "eta=1.0": {"eta": 1.0},
    "rtol=0.005": {"rtol": 0.005},
    "rtol=0.05": {"rtol": 0.05},
    "logit_step=2": {"logit_step": 2.0},
    "logit_step=8": {"logit_step": 8.0},
}
#: an optional tight reference (the method notes' measurement used eta 0.1)
EXTRA = {"eta=0.1": {"eta": 0.1}, "eta=0.1,rtol=0.005": {"eta": 0.1, "rtol": 0.005}}
#: the tight trace the L2 distances are compared with
REFERENCE = {"eta": 0.1, "logit_step": 0.25, "rtol": 0.005, "atol": 1e-4, "max_steps": 5000}


def run_setting(
    model, X, source, target, options: dict, batch_size: int, repeats: int, jac_cost, reference=None
) -> dict:
    from frmargin.geometry import margin_lower_bound, predicted_path
    from frmargin.paths import trace_paths

    walls = []
    for _ in range(repeats):
        with cm.instrument() as rec:
            t0 = time.perf_counter()
            res = trace_paths(model, X, source, target, batch_size=batch_size, **options)
            walls.append(time.perf_counter() - t0)
    wall = float(np.median(walls))
    with torch.no_grad():
        p0 = torch.softmax(model(X).to(torch.float64), -1)
    pred_len, pred_hit = predicted_path(p0, source, target)
    lb = margin_lower_bound(p0, source)
    ok = torch.tensor([s == "ok" for s in res.status])
    L = res.fr_length
    rel = ((L - pred_len).abs() / pred_len.clamp_min(1e-300))[ok].numpy()
    P = len(res)
    ov = cm.overhead(rec, jac_cost)
    l2 = {}
    if reference is not None:
        both = ok & torch.tensor([s == "ok" for s in reference.status])
        d = ((res.l2 - reference.l2) / reference.l2)[both].numpy()
        l2 = {
            "l2_vs_reference_median": cm.quantile(np.abs(d), 0.5),
            "l2_vs_reference_p90": cm.quantile(np.abs(d), 0.9),
            "l2_vs_reference_bias": float(d.mean()) if d.size else float("nan"),
        }
    statuses = {s: res.status.count(s) for s in sorted(set(res.status))}
    return {
        "paths": P,
        "ok": int(ok.sum()),
        "statuses": statuses,
        "rel_err_median": cm.quantile(rel, 0.5),
        "rel_err_p90": cm.quantile(rel, 0.9),
        "rel_err_max": float(rel.max()) if rel.size else float("nan"),
        "first_hit_agreement": float((res.first_hit == pred_hit)[ok].double().mean()),
        "share_ge_lower_bound": float((lb <= L)[ok].double().mean()),
        "min_excess_over_lb": float((L - lb)[ok].min()),
        "jacobian_evals_per_path": float(res.jacobian_evals.mean()),
        "jacobian_evals_per_path_median": float(res.jacobian_evals.median()),
        "forward_evals_per_path": float(res.forward_evals.double().mean()),
        "steps_per_path": float(res.steps.double().mean()),
        "wall_s": wall,
        "wall_s_all_repeats": walls,
        "wall_s_per_path": wall / P,
        "wall_per_path_in_jacobian_units": wall / P / jac_cost(1),
        **l2,
        **{f"tracer_{k}": v for k, v in ov.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20, help="correctly classified images (9 paths each)")
    ap.add_argument("--no-reference", action="store_true", help="skip the tight reference trace (L2 accuracy)")
    ap.add_argument("--offset", type=int, default=0, help="first dataset index searched")
    ap.add_argument("--data", default="cifar10-exact")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list among {list(SETTINGS) + list(EXTRA)}")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument(
        "--repeats", type=int, default=1, help="timed traces per setting (median); a warm-up trace runs first"
    )
    ap.add_argument("--jac-repeats", type=int, default=3)
    cm.add_thread_arg(ap)
    args = ap.parse_args(argv)
    cm.apply_threads(args.threads)
    torch.manual_seed(0)

    info = cm.device_info()
    model = cm.load_model()
    x, y = cm.correct_images(model, args.data, args.images, args.offset)
    X, source, target = cm.all_target_paths(x, y, 10)
    P = X.shape[0]
    print(f"[{NAME}] {args.images} images, {P} paths; device: {cm.device_line(info)}", flush=True)

    # warm-up: one short trace (allocator, vmap and kernel caches)
    from frmargin.paths import trace_paths

    trace_paths(model, X[:2], source[:2], target[:2], max_steps=2)
    jac_batch = min(P, args.batch_size)
    jac_cost = cm.JacobianCost(model, X[::9] if P > 9 else X, jac_batch, repeats=args.jac_repeats)
    print(
        f"[{NAME}] reference Jacobian: "
        + ", ".join(
            f"B={r['batch']}: {r['jacobian_s']:.3f}s ({r['jacobian_in_forward_units']:.0f} fwd, loop {r['loop_of_C_backward_s']:.3f}s,"
            f" C - 1 rows x{r['reference_row_over_full']:.2f})"
            for r in jac_cost.rows()
        ),
        flush=True,
    )

    table = {**SETTINGS, **EXTRA}
    reference = None
    if not args.no_reference:
        t0 = time.perf_counter()
        reference = trace_paths(model, X, source, target, batch_size=args.batch_size, **REFERENCE)
        print(
            f"[{NAME}] reference {REFERENCE}: {time.perf_counter() - t0:.0f} s, "
            f"{reference.jacobian_evals.mean():.1f} Jacobian evals/path",
            flush=True,
        )
    rows = []
    for name in [s for s in args.settings.split(",") if s]:
        if name not in table:
            raise SystemExit(f"--settings: unknown {name!r}, expected among {list(table)}")
        t0 = time.perf_counter()
        r = run_setting(model, X, source, target, table[name], args.batch_size, args.repeats, jac_cost, reference)
        r = {"setting": name, "options": table[name], **r}
        rows.append(r)
        print(
            f"[{NAME}] {name}: rel err med {r['rel_err_median']:.2e} p90 {r['rel_err_p90']:.2e}, "
            f"hit {r['first_hit_agreement']:.3f}, jac/path {r['jacobian_evals_per_path']:.2f}, "
            f"fwd/path {r['forward_evals_per_path']:.1f}, {r['wall_s_per_path']:.2f} s/path, "
            f"overhead per step {r['tracer_overhead_per_accepted_step']:.2f}, "
            f"l2 vs reference {r.get('l2_vs_reference_median', float('nan')):.1e} "
            f"({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )

    cols = [
        "setting",
        "paths",
        "ok",
        "statuses",
        "rel_err_median",
        "rel_err_p90",
        "rel_err_max",
        "first_hit_agreement",
        "share_ge_lower_bound",
        "jacobian_evals_per_path",
        "forward_evals_per_path",
        "steps_per_path",
        "l2_vs_reference_median",
        "l2_vs_reference_p90",
        "l2_vs_reference_bias",
        "wall_s_per_path",
        "tracer_time_per_accepted_step_s",
        "tracer_overhead_per_accepted_step",
        "tracer_overhead_median",
        "tracer_overhead_aggregate",
        "tracer_overhead_in_situ",
        "tracer_share_jacobian",
        "tracer_share_forward",
        "tracer_share_other",
    ]
    md = [
        f"# {NAME}: converged-mode accuracy vs cost (ResNet-20, {args.data})\n",
        f"Device: {cm.device_line(info)}\n",
        f"{args.images} correctly classified images x 9 targets = {P} paths, batch_size {args.batch_size}, "
        f"timed traces per setting: {args.repeats} (after one warm-up trace).\n",
        "Units: rel_err = |FR length - predicted_path| / predicted_path over status-ok paths; "
        "jacobian_evals / forward_evals per path (machine independent); wall s per path; "
        "tracer overhead per accepted step = wall time per accepted path-step / time of one point's "
        "Jacobian in a batched call at the step's batch size (1.0 = one Jacobian per step and nothing "
        "else); overhead median / aggregate = iteration wall time / one batched Jacobian evaluation of "
        "the same batch; shares = fraction of iteration time in Jacobian calls, forward passes, and the "
        f"rest (float64 C x C algebra, J^T w products). l2_vs_reference: |l2 - l2_ref| / l2_ref against "
        f"a tight trace {REFERENCE} (bias: mean signed).\n",
        cm.markdown_table(rows, cols),
        "\n## Reference Jacobian cost (logits_and_jacobian, median)\n",
        cm.markdown_table(jac_cost.rows()),
    ]
    plot = plot_curve(rows)
    if plot:
        md.append(f"\nPlot: `{plot.name}`\n")
    payload = {"device": info, "args": vars(args), "settings": rows, "jacobian_reference": jac_cost.rows()}
    path = cm.save(NAME, payload, "\n".join(md))
    print(f"[{NAME}] wrote {path}", flush=True)

    default = next((r for r in rows if r["setting"] == "default"), rows[0])
    best = min(rows, key=lambda r: (r["ok"] < r["paths"], r["rel_err_median"] * r["jacobian_evals_per_path"]))
    payload["summary"] = [
        cm.figure(
            NAME,
            f"rel. error vs closed form, median ({default['setting']})",
            default["rel_err_median"],
            "1",
            f"p90 {default['rel_err_p90']:.2e}, {P} paths",
        ),
        cm.figure(NAME, f"first-hit agreement ({default['setting']})", default["first_hit_agreement"], "share"),
        cm.figure(
            NAME,
            f"paths with status ok ({default['setting']})",
            f"{default['ok']} / {default['paths']}",
            "paths",
            ", ".join(f"{k} {v}" for k, v in default["statuses"].items()),
        ),
        cm.figure(
            NAME, f"share of lengths >= lower bound ({default['setting']})", default["share_ge_lower_bound"], "share"
        ),
        cm.figure(
            NAME,
            f"Jacobian evals per path ({default['setting']})",
            default["jacobian_evals_per_path"],
            "Jacobian evals",
        ),
        cm.figure(
            NAME,
            f"L2 at the change vs tight reference ({default['setting']})",
            default.get("l2_vs_reference_median", float("nan")),
            "relative",
            f"p90 {default.get('l2_vs_reference_p90', float('nan')):.2e}, bias "
            f"{default.get('l2_vs_reference_bias', float('nan')):+.2e}",
        ),
        cm.figure(
            NAME, f"forward passes per path ({default['setting']})", default["forward_evals_per_path"], "forward passes"
        ),
        cm.figure(
            NAME, f"wall time per path ({default['setting']})", default["wall_s_per_path"], "s", f"batch of {P} paths"
        ),
        cm.figure(
            NAME, f"time per accepted step ({default['setting']})", default["tracer_time_per_accepted_step_s"], "s"
        ),
        cm.figure(
            NAME,
            f"tracer overhead per accepted step ({default['setting']})",
            default["tracer_overhead_per_accepted_step"],
            "x one point's batched Jacobian",
            f"per iteration: aggregate {default['tracer_overhead_aggregate']:.2f}, "
            f"median {default['tracer_overhead_median']:.2f}; in situ (iteration / its own Jacobian "
            f"call) {default['tracer_overhead_in_situ']:.2f}; time shares J/fwd/other "
            f"{default['tracer_share_jacobian']:.2f}/{default['tracer_share_forward']:.2f}/{default['tracer_share_other']:.2f}",
        ),
        cm.figure(
            NAME,
            "best (median rel. error x Jacobian evals, all paths ok)",
            best["setting"],
            "setting",
            f"rel err {best['rel_err_median']:.2e} at {best['jacobian_evals_per_path']:.2f} Jacobian evals/path",
        ),
    ]
    jr = jac_cost.rows()
    payload["summary"].append(
        cm.figure(
            NAME,
            "Jacobian eval (vmapped vjp), per point",
            " / ".join(f"{r['jacobian_s_per_point']:.4f}" for r in jr),
            "s/point",
            "at B = "
            + ", ".join(str(r["batch"]) for r in jr)
            + "; in forward units "
            + ", ".join(f"{r['jacobian_in_forward_units']:.0f}" for r in jr)
            + "; vmap / loop-of-C-backward time "
            + ", ".join(f"{r['vmap_over_loop']:.2f}" for r in jr)
            + "; the tracer's rows minus the last one (C - 1 backward passes) / all C rows "
            + ", ".join(f"{r['reference_row_over_full']:.2f}" for r in jr),
        )
    )
    for r in rows:
        if r is default:
            continue
        payload["summary"].append(
            cm.figure(
                NAME,
                f"{r['setting']}: rel. error median / Jacobian evals per path",
                f"{r['rel_err_median']:.2e} / {r['jacobian_evals_per_path']:.2f}",
                "1 / Jacobian evals",
                f"p90 {r['rel_err_p90']:.2e}, hit {r['first_hit_agreement']:.3f}, {r['forward_evals_per_path']:.1f} fwd/path, "
                f"L2 vs reference {r.get('l2_vs_reference_median', float('nan')):.1e}, {r['wall_s_per_path']:.2f} s/path, "
                f"ok {r['ok']}/{r['paths']}"
                + (
                    ""
                    if r["ok"] == r["paths"]
                    else " (" + ", ".join(f"{k} {v}" for k, v in r["statuses"].items() if k != "ok") + ")"
                ),
            )
        )
    return payload


def plot_curve(rows: list[dict]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for r in rows:
        xval, med, p90 = r["jacobian_evals_per_path"], r["rel_err_median"], r["rel_err_p90"]
        ax.errorbar([xval], [med], yerr=[[0], [max(p90 - med, 0)]], fmt="o", capsize=3)
        ax.annotate(r["setting"], (xval, med), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("Jacobian evaluations per path (mean)")
    ax.set_ylabel("relative error vs closed form (median, bar to p90)")
    ax.set_yscale("log")
    ax.set_title("Converged tracer: accuracy vs cost (ResNet-20 / CIFAR-10)")
    ax.grid(alpha=0.3)
    cm.RESULTS.mkdir(parents=True, exist_ok=True)
    out = cm.RESULTS / f"{NAME}.png"
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


if __name__ == "__main__":
    main()

"""Shared helpers of the benchmarks: timing, workloads, tracer instrumentation.

Every benchmark reports cost in machine-independent units (Jacobian evaluations, forward passes,
Fisher matvecs, or a time divided by the time of one reference operation measured on the same
machine in the same process) next to wall seconds. Timings take a warm-up call, then ``repeats``
calls, and report the median.

Nothing here changes the package. The few names inside ``frmargin`` that the benchmarks reach
(the tracer's iteration, the network's forward pass and Jacobian call, the box's damping floor,
the accuracy defaults) are looked up in one section, "package internals", so that a refactor of
``frmargin.paths`` is one edit here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

TESTS = Path(__file__).resolve().parents[1] / "tests"


# ------------------------------------------------------------------------ package internals
def instrumented() -> dict[str, tuple[object, str]]:
    """The (owner, attribute) pairs ``instrument`` wraps: one tracer iteration
    (``ChunkTracer.advance``), one forward pass (``Network.forward``) and the
    ``logits_and_jacobian`` that ``Network.jacobian`` calls (a global of its module)."""
    import frmargin.paths.state as state
    import frmargin.paths.tracer as tracer

    return {
        "advance": (tracer.ChunkTracer, "advance"),
        "forward": (state.Network, "forward"),
        "jacobian": (state, "logits_and_jacobian"),
    }


@contextlib.contextmanager
def step_log():
    """Record every step the tracer books while the block runs (``ChunkTracer.run`` and
    ``accept`` wrapped, then restored): a dict path -> list of (L2 of the step's input move, its
    FR length, whether the path had changed class or finished by its end), paths numbered as in
    ``trace_paths``'s input (the chunks in the order they run)."""
    import frmargin.paths.tracer as tracer

    orig_run, orig_accept = tracer.ChunkTracer.run, tracer.ChunkTracer.accept
    log: dict[int, list[tuple[float, float, bool]]] = {}
    first: dict[int, int] = {}  # id of a chunk's state -> the number of its first path

    def run(self):
        first[id(self.state)] = sum(_sizes)
        _sizes.append(len(self.state))
        return orig_run(self)

    def accept(self, step):
        st, g = self.state, step.idx
        before = st.length[g].clone()
        orig_accept(self, step)
        dx = (step.x_new - step.x_old).reshape(len(g), -1).double().norm(dim=-1)
        done = ~st.active[g] | (st.first_hit[g] >= 0)
        for i, a, b, f in zip(g.tolist(), dx.tolist(), (st.length[g] - before).tolist(), done.tolist()):
            log.setdefault(first[id(st)] + i, []).append((a, b, f))

    _sizes: list[int] = []
    tracer.ChunkTracer.run, tracer.ChunkTracer.accept = run, accept
    try:
        yield log
    finally:
        tracer.ChunkTracer.run, tracer.ChunkTracer.accept = orig_run, orig_accept


def set_box_damping(floor: float) -> None:
    """Set the base damping floor of the box's projected direction (``frmargin.paths.box``)."""
    from frmargin.paths import box

    box.BOX_DAMPING = floor


def accuracy_defaults() -> dict:
    """The tracer's default accuracy options (``eta``, ``logit_step``, ...)."""
    from frmargin.options import ACCURACY_DEFAULTS

    return dict(ACCURACY_DEFAULTS)


def box_margin():
    """The in-box margin estimate ``frmargin.paths.box_margin.box_margin``."""
    from frmargin.paths.box_margin import box_margin as estimate

    return estimate


def tests_helper(name: str) -> ModuleType:
    """A helper module of the test suite (``tests/<name>.py``, e.g. the synthetic digits),
    loaded from its file."""
    spec = importlib.util.spec_from_file_location(f"tests_{name}", TESTS / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no test helper {name!r} in {TESTS}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------ timing
def timeit(fn: Callable[[], object], *, warmup: int = 1, repeats: int = 3) -> dict:
    """Median, min and all wall times (s) of ``fn()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "times": times, "repeats": repeats}


def quantile(values, q: float) -> float:
    arr = np.asarray(list(values), dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(np.quantile(arr, q)) if arr.size else float("nan")


def statuses(status) -> str:
    """Status counts as text, e.g. ``"budget=1 ok=8"`` (sorted by status)."""
    status = list(status)
    return " ".join(f"{s}={status.count(s)}" for s in sorted(set(status)))


def names(text: str) -> list[str]:
    """A comma list as a list (empty items dropped)."""
    return [v for v in str(text).split(",") if v]


def numbers(text, kind: type = int) -> list:
    """A comma list of numbers (a single number is a list of one)."""
    return [kind(v) for v in names(str(text))]


# ------------------------------------------------------------------------ workloads
def load_model(name: str = "resnet20"):
    """A registered model (CIFAR zoo or ImageNet) from the asset store, frozen, eval mode."""
    import frmargin

    return frmargin.load_model(name, progress=False).eval()


def first_images(data: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images of the dataset ``data``: x (n, 3, H, W) in [0, 1], labels y (n,)."""
    import frmargin

    ds = frmargin.load_dataset(data, progress=False)
    return ds.images[:n], ds.labels[:n]


def correct_subset(model, x: torch.Tensor, y: torch.Tensor, n: int):
    """The first ``n`` (or fewer) of x (B, ...) that ``model`` classifies as y (B,): x (n, ...),
    y (n,) and their softmax outputs p (n, C) in float64."""
    with torch.no_grad():
        logits = model(x)
    good = (logits.argmax(-1) == y).nonzero()[:n, 0]
    return x[good], y[good], torch.softmax(logits[good].double(), -1)


def correct_images(model, data: str, n: int, offset: int = 0):
    """The first ``n`` correctly classified images of ``data`` from ``offset``: x (n, 3, 32, 32), y (n,)."""
    import frmargin

    ds = frmargin.load_dataset(data, progress=False)
    xs, ys = [], []
    start = offset
    while sum(len(y) for y in ys) < n and start < len(ds.labels):
        x, y, _ = correct_subset(model, ds.images[start : start + 64], ds.labels[start : start + 64], 64)
        xs.append(x)
        ys.append(y)
        start += 64
    x, y = torch.cat(xs)[:n], torch.cat(ys)[:n]
    if len(y) < n:
        raise SystemExit(f"--images: only {len(y)} correctly classified images in {data} from {offset}")
    return x, y


def other_class_paths(y: torch.Tensor, n_classes: int):
    """A path from every image to each other class (ascending), grouped by image: the image of
    each path (P,), its source (P,) and target (P,), P = B (n_classes - 1)."""
    image = torch.arange(len(y)).repeat_interleave(n_classes - 1)
    target = torch.tensor([k for s in y.tolist() for k in range(n_classes) if k != s], dtype=torch.long)
    return image, y[image], target


def all_target_paths(x: torch.Tensor, y: torch.Tensor, n_classes: int):
    """Paths from every image to each other class, grouped by image: X (P, ...), source, target."""
    image, source, target = other_class_paths(y, n_classes)
    return x[image], source, target


def ranked_target_paths(p: torch.Tensor, ranks):
    """Paths from each input's most probable class to its classes of probability rank ``ranks``
    (0 = the most probable) under p (B, C), grouped by input: image (P,), source (P,), target (P,)."""
    order = p.argsort(-1, descending=True)
    image = torch.arange(p.shape[0]).repeat_interleave(len(ranks))
    return image, order[image, 0], order[:, list(ranks)].reshape(-1)


# ------------------------------------------------------------------------ instrumentation
@dataclass
class Trace:
    """Events recorded while tracing: one entry per tracer iteration (``step``) with its wall
    time, the number of active paths, the Jacobian batch actually evaluated (after the tracer's
    de-duplication of identical points) and accepted steps; and totals of Jacobian and forward time.
    """

    steps: list[dict] = field(default_factory=list)
    jac_time: float = 0.0
    jac_calls: int = 0
    fwd_time: float = 0.0
    fwd_calls: int = 0
    fwd_rows: int = 0
    _current: dict | None = None


@contextlib.contextmanager
def instrument():
    """Record tracer iterations, Jacobian and forward calls while the block runs (the methods of
    ``instrumented()`` are wrapped for its duration, then restored)."""
    targets = instrumented()
    rec = Trace()
    orig_advance, orig_fwd, orig_jac = (getattr(*targets[k]) for k in ("advance", "forward", "jacobian"))

    def jac(model, x, **kwargs):
        t0 = time.perf_counter()
        out = orig_jac(model, x, **kwargs)
        dt = time.perf_counter() - t0
        rec.jac_time += dt
        rec.jac_calls += 1
        if rec._current is not None:
            rec._current["jac_batch"] += x.shape[0]
            rec._current["jac_time"] += dt
        return out

    def fwd(self, gidx, xs):
        t0 = time.perf_counter()
        out = orig_fwd(self, gidx, xs)
        dt = time.perf_counter() - t0
        rec.fwd_time += dt
        rec.fwd_calls += 1
        rec.fwd_rows += xs.shape[0]
        if rec._current is not None:
            rec._current["fwd_time"] += dt
            rec._current["fwd_calls"] += 1
        return out

    def advance(self, idx):
        cur = {"active": int(idx.numel()), "jac_batch": 0, "jac_time": 0.0, "fwd_time": 0.0, "fwd_calls": 0}
        before = int(self.state.steps.sum())
        rec._current = cur
        t0 = time.perf_counter()
        try:
            orig_advance(self, idx)
        finally:
            cur["time"] = time.perf_counter() - t0
            rec._current = None
        cur["accepted"] = int(self.state.steps.sum()) - before
        rec.steps.append(cur)

    wrappers = {"advance": advance, "forward": fwd, "jacobian": jac}
    for k, (owner, attr) in targets.items():
        setattr(owner, attr, wrappers[k])
    try:
        yield rec
    finally:
        for k, orig in (("advance", orig_advance), ("forward", orig_fwd), ("jacobian", orig_jac)):
            setattr(*targets[k], orig)


def _jacobian_loop(model, x):
    """The alternative to the vmapped vjp: C backward passes through one retained graph."""
    x = x.detach().clone().requires_grad_(True)
    z = model(x)
    C = z.shape[-1]
    rows = [torch.autograd.grad(z[:, c].sum(), x, retain_graph=c < C - 1)[0] for c in range(C)]
    return torch.stack(rows, 1)


class JacobianCost:
    """Reference wall time of one batched ``logits_and_jacobian`` call, measured at batch sizes
    1, 2, 4, ... on distinct images (warm-up + median of repeats) and interpolated linearly in
    the batch size between them. Also times the forward pass and, for comparison, the
    Jacobian by a loop of C backward passes."""

    def __init__(self, model, images: torch.Tensor, max_batch: int, repeats: int = 3) -> None:
        from frmargin.fisher import logits_and_jacobian

        sizes = sorted({1, *[2**i for i in range(1, 12) if 2**i < max_batch], max_batch})
        with torch.no_grad():
            C = int(model(images[:1]).shape[-1])
        self.table: dict[int, dict] = {}
        for b in sizes:
            x = images[torch.arange(b) % images.shape[0]].clone()
            if b > images.shape[0]:  # distinct points: perturb the repeats slightly
                x = x + 1e-3 * torch.rand_like(x)
            t = timeit(lambda x=x: logits_and_jacobian(model, x), warmup=1, repeats=repeats)
            with torch.no_grad():
                f = timeit(lambda x=x: model(x), warmup=1, repeats=max(repeats, 5))
            loop = timeit(lambda x=x: _jacobian_loop(model, x), warmup=1, repeats=repeats)
            # the tracer's evaluation: the rows minus the last one, one backward pass fewer
            short = timeit(lambda x=x, r=C - 1: logits_and_jacobian(model, x, reference=r), warmup=1, repeats=repeats)
            self.table[b] = {
                "jacobian_s": t["median"],
                "forward_s": f["median"],
                "loop_s": loop["median"],
                "reference_row_s": short["median"],
            }
        self.sizes = np.array(sizes, dtype=float)
        self.times = np.array([self.table[b]["jacobian_s"] for b in sizes])
        self.ftimes = np.array([self.table[b]["forward_s"] for b in sizes])

    def __call__(self, b: float) -> float:
        return float(np.interp(b, self.sizes, self.times))

    def forward(self, b: float) -> float:
        return float(np.interp(b, self.sizes, self.ftimes))

    def rows(self) -> list[dict]:
        return [
            {
                "batch": b,
                "jacobian_s": v["jacobian_s"],
                "forward_s": v["forward_s"],
                "jacobian_s_per_point": v["jacobian_s"] / b,
                "jacobian_in_forward_units": v["jacobian_s"] / v["forward_s"],
                "loop_of_C_backward_s": v["loop_s"],
                "vmap_over_loop": v["jacobian_s"] / v["loop_s"],
                "reference_row_over_full": v["reference_row_s"] / v["jacobian_s"],
            }
            for b, v in self.table.items()
        ]


def overhead(rec: Trace, jac_cost: JacobianCost) -> dict:
    """Tracer overhead: time of a tracer iteration / reference time of one Jacobian evaluation
    of the batch that iteration evaluated; the time split into Jacobian, forward and the rest."""
    steps = [s for s in rec.steps if s["jac_batch"] > 0]
    ratios = [s["time"] / jac_cost(s["jac_batch"]) for s in steps]
    total = sum(s["time"] for s in rec.steps)
    ref = sum(jac_cost(s["jac_batch"]) for s in steps)
    accepted = sum(s["accepted"] for s in rec.steps)
    jac_in = sum(s["jac_time"] for s in rec.steps)
    fwd_in = sum(s["fwd_time"] for s in rec.steps)
    # the unit: each accepted path-step priced at one Jacobian row-evaluation (one point)
    # at the batch size of the iteration that made it
    per_step_ref = sum(s["accepted"] * jac_cost(max(s["active"], 1)) / max(s["active"], 1) for s in rec.steps)
    return {
        "iterations": len(rec.steps),
        "accepted_steps": accepted,
        "overhead_per_accepted_step": total / per_step_ref if per_step_ref else float("nan"),
        "step_time_s": total,
        "time_per_accepted_step_s": total / accepted if accepted else float("nan"),
        "overhead_median": statistics.median(ratios) if ratios else float("nan"),
        "overhead_aggregate": total / ref if ref else float("nan"),
        "share_jacobian": jac_in / total if total else float("nan"),
        "share_forward": fwd_in / total if total else float("nan"),
        "share_other": 1 - (jac_in + fwd_in) / total if total else float("nan"),
        "jacobian_in_tracer_vs_reference": jac_in / ref if ref else float("nan"),
        # contention-robust variant: both times taken in the same iteration
        "overhead_in_situ": total / jac_in if jac_in else float("nan"),
        "overhead_in_situ_median": statistics.median(s["time"] / s["jac_time"] for s in steps if s["jac_time"] > 0)
        if steps
        else float("nan"),
        "mean_jacobian_batch": statistics.mean(s["jac_batch"] for s in steps) if steps else float("nan"),
    }

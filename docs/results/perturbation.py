"""The perturbation-model measurement: run it (resumably, in rounds) and collect its result set.

    python docs/results/perturbation.py run --root RUNS [--images 100] [--quotas 2,4,10,20,50,100]
    python docs/results/perturbation.py collect --root RUNS [--command "..."]

``run`` traces one run folder per (model, perturbation model, metric) under
``RUNS/<model>/<perturbation>/<metric>`` with ``frmargin run`` (``--images`` official test
images, two per chunk, one thread) in rounds: in each round every configuration, in priority
order, is traced until it holds at least the round's quota of chunks' images (a running
``frmargin run`` is interrupted cleanly once its folder holds the quota; rerunning the command
resumes every folder where it stopped). ``collect`` summarizes every folder as it stands
(finished or not) into ``docs/results/data/perturbation/`` (``frmargin.analysis.perturbation``)
with the commands, date, machine and package version.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("resnet20", "cnn-a-adv2", "resnet2b-adv2", "shufflenetv2-x0.5")
KS = ("1", "2", "4", "8", "16", "full")
#: in priority order (the K the finding turns on first, the control after)
PERTURBATIONS = (
    *("dct:1", "dct:4", "dct:16", "dct:full", "color", "dct:2", "dct:8"),
    *("random:4", "random:1", "random:16", "random:full", "random:2", "random:8"),
)
METRICS = ("fisher", "euclidean")
CHUNK_IMAGES = 2
POLL_SECONDS = 20


def folder_name(perturbation: str) -> str:
    return perturbation.replace(":", "-")


def run_dir(root: Path, model: str, perturbation: str, metric: str) -> Path:
    return root / model / folder_name(perturbation) / metric


def images_done(out: Path) -> int:
    """Images whose chunk is written (two per part; a finished run: all of its correct images)."""
    info = out / "run.json"
    if info.exists() and json.loads(info.read_text()).get("status") == "complete":
        return 10**9
    parts = out / "paths.parquet"
    return CHUNK_IMAGES * len(list(parts.glob("part-*.parquet"))) if parts.is_dir() else 0


def command(model: str, perturbation: str, metric: str, images: int, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "frmargin", "run", "--model", model, "--data", "cifar10", "--images", str(images),
        "--perturbation", perturbation, "--metric", metric, "--chunk-images", str(CHUNK_IMAGES),
        "--threads", "1", "--no-progress", "--out", str(out),
    ]  # fmt: skip


def trace_until(cmd: list[str], out: Path, quota: int, log: Path) -> None:
    """Run ``cmd`` until it ends or its folder holds ``quota`` images (then interrupt it)."""
    if images_done(out) >= quota:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd[2:])} (quota {quota})\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            time.sleep(POLL_SECONDS)
            if images_done(out) >= quota:
                proc.send_signal(signal.SIGINT)
                proc.wait()
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ended ({images_done(out)} images done)\n")


def run(args: argparse.Namespace) -> None:
    root = Path(args.root)
    quotas = [int(q) for q in args.quotas.split(",")]
    for quota in quotas:
        for model in args.models.split(","):
            for perturbation in args.perturbations.split(","):
                for metric in METRICS:
                    out = run_dir(root, model, perturbation, metric)
                    cmd = command(model, perturbation, metric, args.images, out)
                    trace_until(cmd, out, quota, root / "driver.log")


def collect(args: argparse.Namespace) -> None:
    from frmargin.analysis.perturbation import collect_set

    collect_set(Path(args.root), Path(__file__).resolve().parent / "data" / "perturbation", args.command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="trace (resume) every configuration in rounds of image quotas")
    r.add_argument("--root", required=True)
    r.add_argument("--images", type=int, default=100)
    r.add_argument("--quotas", default="2,4,10,20,50,100")
    r.add_argument("--models", default=",".join(MODELS))
    r.add_argument("--perturbations", default=",".join(PERTURBATIONS))
    c = sub.add_parser("collect", help="summarize the folders into docs/results/data/perturbation/")
    c.add_argument("--root", required=True)
    c.add_argument("--command", action="append", default=[])
    args = parser.parse_args()
    {"run": run, "collect": collect}[args.what](args)


if __name__ == "__main__":
    main()

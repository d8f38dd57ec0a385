"""``frmargin assets`` and ``frmargin accuracy``: the asset store and a model's accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import assets as store
from ..errors import AssetError, FrmarginError, bad_argument
from .app import app

__all__ = ["accuracy", "accuracy_line", "assets", "assets_table"]


def _size(path: Path) -> str:
    n = float(path.stat().st_size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""  # pragma: no cover


def assets_table(*, verify: bool = True) -> list[str]:
    """Lines of the asset table: name, kind, state, size, where the file is or would come from.

    Example:
        >>> print("\\n".join(assets_table()))  # doctest: +SKIP
    """
    try:
        mirror = store.mirror_setting() or "(unset)"
    except AssetError as e:
        mirror = f"(invalid: {e})"
    lines = [f"home: {store.home_dir()}", f"mirror ({store.ENV_MIRROR}): {mirror}"]
    rows = [("asset", "kind", "state", "size", "where")]
    for name in store.ASSETS:
        s = store.asset_status(name, verify=verify)
        where = f"{s.origin}: {s.path}" if s.path is not None else s.origin
        rows.append((name, s.asset.kind, s.state, _size(s.path) if s.path else "-", where))
    converted = store.home_dir() / "data" / "cifar10-test.npz"
    if converted.is_file():
        rows.append(("cifar10 (converted)", "data", "present", _size(converted), f"home: {converted}"))
    else:
        rows.append(("cifar10 (converted)", "data", "missing", "-", "made from cifar10-python on first use"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    return lines


@app.command()
def assets(verify: bool = typer.Option(True, help="Verify checksums of present files.")) -> None:
    """List every known weight and data file with its state."""
    typer.echo("\n".join(assets_table(verify=verify)))


def accuracy_line(model: str, data: str, limit: int | None = None) -> list[str]:
    """Header lines (data caveat) and the result line of ``frmargin accuracy``.

    Example:
        >>> accuracy_line("resnet20", "cifar10-exact")  # doctest: +SKIP
        ['resnet20 on cifar10-exact (300 exact ...): top-1 93.00% (279/300)']
    """
    from ..models import load_model, top1_correct
    from ..runs.preflight import resolve_data

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise bad_argument("limit", limit, "a positive integer or None")
    net = load_model(model)
    ds = resolve_data(data).head(limit)
    correct = top1_correct(net, ds.images, ds.labels)
    n = len(ds)
    lines = [f"CAVEAT: {ds.caveat}"] if ds.caveat else []
    lines.append(f"{model} on {ds.name} ({ds.source}): top-1 {100 * correct / n:.2f}% ({correct}/{n})")
    return lines


@app.command()
def accuracy(
    model: str = typer.Option("resnet20", help="Model name."),
    data: str = typer.Option("cifar10-exact", help="Dataset name or .npz path."),
    limit: Optional[int] = typer.Option(None, help="Use the first N images."),
) -> None:
    """Top-1 accuracy of a model on a dataset, with the data source."""
    if limit is not None and limit < 1:
        raise FrmarginError(f"option '--limit': got {limit}, expected a positive number")
    typer.echo("\n".join(accuracy_line(model, data, limit)))

"""``frmargin assets`` and ``frmargin accuracy``: the asset store and a model's accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import assets as store
from ..errors import AssetError, FrmarginError, bad_argument
from .app import app, resolve_device, set_threads
from .model_options import with_model_options

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
    """The data caveat (if any) and the top-1 line of ``frmargin accuracy`` for a model name.

    Example:
        >>> accuracy_line("resnet20", "cifar10-exact")  # doctest: +SKIP
        ['resnet20 on cifar10-exact (300 exact ...): top-1 93.00% (279/300)']
    """
    from ..runs.accuracy import model_accuracy
    from ..runs.config import RunConfig

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise bad_argument("limit", limit, "a positive integer or None")
    return model_accuracy(RunConfig(model=model, data=data), limit).top1_lines()


@app.command()
@with_model_options()
def accuracy(
    data: str = typer.Option("cifar10-exact", help="Dataset name, .npz path or image folder."),
    limit: Optional[int] = typer.Option(None, help="Use the first N images."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    dtype: str = typer.Option("float32", help="float32 or float64."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    *,
    model_options: dict,
) -> None:
    """Top-1 accuracy, median confidence and the calibrating temperature of a model on a dataset,
    with the data source: the checks before a long run (the model options are those of run)."""
    from ..runs.accuracy import model_accuracy
    from ..runs.config import RunConfig, cli_spelling

    if limit is not None and limit < 1:
        raise FrmarginError(f"option '--limit': got {limit}, expected a positive number")
    set_threads(threads)
    config = RunConfig(**model_options, data=data, device=resolve_device(device), dtype=dtype)
    config.validate(spell=cli_spelling)
    typer.echo("\n".join(model_accuracy(config, limit).lines()))

"""``RunConfig``: everything that defines a run, its identity and fingerprint, and its checks.

Importing this module imports neither torch nor pandas. The tracing options are a nested
``TraceOptions`` (``frmargin.options``); run.json and the fingerprint store them flat, as every
run folder has (``RunConfig.flat``), so older run folders keep their fingerprints.

Example:
    >>> config = RunConfig(images=20, data="cifar10-exact")
    >>> config.validate()
    >>> len(config.fingerprint())
    16
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..errors import bad_argument, did_you_mean
from ..options import ACCURACY_FIELDS, TraceOptions, cli_spelling, spell, spelled
from .box_estimate import parse_box_margin
from .targets import MANY_CLASSES, default_targets, default_top_classes, parse_targets

__all__ = [
    "ATTACK_NAMES",
    "FINGERPRINT_VERSION",
    "IDENTITY_FIELDS",
    "TOP_LEVEL_FIELDS",
    "RunConfig",
    "check_run_options",
    "check_temperature_option",
    "cli_spelling",
    "content_hash",
    "fingerprint",
    "resume_mismatch",
]

#: run.json's ``fingerprint_version``: 2 = options, batch size, model weights and data content
FINGERPRINT_VERSION = 2
#: keys of an identity dict that hold a content hash (file sha256, or a structural hash)
HASH_KEYS = ("sha256", "structural_sha256", "structural_hash")

#: configuration fields that change results (a resumed run must match them)
IDENTITY_FIELDS = (
    "model", "data", "images", "method", "metric", "until", "box", "seed", "damping", "damping_mode", "solver",
    "max_steps", "accuracy", "chunk_images", "dtype", "top_classes", "weights", "weights_sha256", "normalize",
    "input_range", "resize", "temperature", "targets", "weights_key", "output", "threat_model", "model_dataset",
    "box_margin",
)  # fmt: skip
#: identity fields left out of the fingerprint at their default, so older runs keep theirs
OPTIONAL_IDENTITY = {
    "top_classes": None,
    "weights": None,
    "weights_sha256": None,
    "normalize": None,
    "input_range": (0.0, 1.0),
    "resize": None,
    "temperature": 1.0,
    "targets": None,
    "weights_key": None,
    "output": None,
    "threat_model": None,
    "model_dataset": None,
    "box_margin": "all",
}
#: fields that run.json stores verbatim at its top level (the readers' keys); the other fields go
#: into its ``config`` entry, so that every field is stored once
TOP_LEVEL_FIELDS = (
    "model", "images", "method", "metric", "until", "box", "seed", "damping_mode", "solver", "top_classes",
    "input_range", "targets",
)  # fmt: skip
#: ``data`` is stored at the top level as ``data_requested`` (``data`` there is the dataset loaded)
REQUESTED_DATA_KEY = "data_requested"
DTYPES = ("float32", "float64")
#: the minimal-L2 attacks ``baselines`` may name (``frmargin.baselines.ATTACKS``; a test keeps them equal)
ATTACK_NAMES = ("deepfool", "fmn", "best", "ossa", "tssa", "random")


def content_hash(identity: Mapping[str, Any] | None) -> str | None:
    """The content hash recorded in a model or data identity dict (None when it has none)."""
    for key in HASH_KEYS:
        value = (identity or {}).get(key)
        if isinstance(value, str) and value:
            return value
    return None


def fingerprint(config: RunConfig, model_identity: Mapping[str, Any], data_identity: Mapping[str, Any]) -> str:
    """16 hex digits identifying a run's results: every option that changes them (batch size
    included), the model's weights hash and the data's content hash. The one place a run's
    fingerprint is composed; in-memory models and data plug in through their identity dicts.

    Example:
        >>> config = RunConfig(images=20)
        >>> fingerprint(config, {"sha256": "ab"}, {"sha256": "cd"}) != fingerprint(config, {"sha256": "ab"}, {})
        True
    """
    payload = {
        "version": FINGERPRINT_VERSION,
        "options": config.options_fingerprint(),
        "model": content_hash(model_identity),
        "data": content_hash(data_identity),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def resume_mismatch(
    old: Mapping[str, Any],
    config: RunConfig,
    model_identity: Mapping[str, Any] | None,
    data_identity: Mapping[str, Any] | None,
) -> str | None:
    """Why the run recorded in ``old`` (a run.json) is not this run, or None when it is.

    With ``model_identity``/``data_identity`` None only the options are compared (the cheap
    check before anything is loaded). Run folders written before fingerprint version 2 are
    compared field by field (options, batch size, the recorded weights and data hashes).
    """
    if old.get("fingerprint_version") == FINGERPRINT_VERSION:
        if old.get("options_fingerprint") != config.options_fingerprint():
            return (
                f"other options (fingerprint {old.get('options_fingerprint')}, this run {config.options_fingerprint()})"
            )
    else:
        if old.get("fingerprint") != config.fingerprint():
            return f"other options (fingerprint {old.get('fingerprint')}, this run {config.fingerprint()})"
        old_batch = (old.get("config") or {}).get("batch_size")
        if old_batch is not None and old_batch != config.trace.batch_size:
            return f"another --batch-size ({old_batch}, this run {config.trace.batch_size}; it changes results)"
    for what, option, new in (("model", "--model", model_identity), ("data", "--data", data_identity)):
        if new is None:
            continue
        before, now = content_hash(old.get(f"{what}_identity")), content_hash(new)
        if before != now:
            return f"other {what} content ({option}: sha256 {str(before)[:12]}, now {str(now)[:12]})"
    return None


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run: what is traced (model, data, images, targets, temperature) and
    how (``trace``, the one ``TraceOptions`` of ``trace_paths`` and the command line). ``data="auto"``
    takes the official CIFAR-10 test split when it can be had and the JPEG copy otherwise (said in run.json).

    Example:
        >>> RunConfig(images=20, trace=TraceOptions(metric="euclidean")).trace.metric
        'euclidean'
    """

    model: str = "resnet20"
    data: str = "auto"
    images: int = 800
    seed: int = 0
    trace: TraceOptions = field(default_factory=TraceOptions)
    baselines: tuple[str, ...] = ()
    chunk_images: int = 4
    dtype: str = "float32"
    device: str = "cpu"
    weights: str | None = None
    weights_sha256: str | None = None
    normalize: str | None = None
    input_range: tuple[float, float] = (0.0, 1.0)
    resize: tuple[int, int] | None = None
    temperature: float | str = 1.0  # a number > 0, or "auto" (NLL-optimal on held-out images)
    #: target rule (runs/targets.py); None: ``all`` when C <= 10, ``top:9`` otherwise
    targets: str | None = None
    #: where the state dict is in ``weights`` (a key path such as ``state_dict/0``); None: found
    weights_key: str | None = None
    #: where the logits are in the model's output (a key or an index); None: read automatically
    output: str | None = None
    #: RobustBench's threat model, model folder and dataset of a ``robustbench:NAME`` model
    threat_model: str | None = None
    model_dir: str | None = None
    model_dataset: str | None = None
    box_margin: str = "all"  # which box paths get the in-box margin estimate (runs/box_estimate.py)

    def validate(self, spell: Callable[[str], str] | None = None) -> None:
        """Raise FrmarginError naming the first bad option (``spell``: how the caller writes an
        option's name, e.g. ``cli_spelling`` for ``--images``; default the field name). The
        tracing options were checked when ``trace`` was made.

        Example:
            >>> RunConfig(images=0).validate(spell=cli_spelling)  # doctest: +SKIP
            FrmarginError: argument '--images': got 0, expected a positive number of images
        """
        with spelled(spell or str):
            self._validate()

    def _validate(self) -> None:
        if not isinstance(self.trace, TraceOptions):
            raise bad_argument("trace", type(self.trace).__name__, "a TraceOptions")
        if not _count(self.images, 1):
            raise bad_argument(spell("images"), self.images, "a positive number of images")
        if not _count(self.chunk_images, 1):
            raise bad_argument(spell("chunk_images"), self.chunk_images, "a positive integer")
        if not (_count(self.seed, 0) and self.seed < 2**63):
            raise bad_argument(spell("seed"), self.seed, "an integer >= 0 (numpy seeds are non-negative)")
        check_model_name(self.model)
        check_device(self.device)
        if self.dtype not in DTYPES:
            raise bad_argument(spell("dtype"), self.dtype, "float32 or float64")
        for attack in self.baselines:
            if attack not in ATTACK_NAMES:
                raise bad_argument(
                    spell("baselines"),
                    attack,
                    f"comma-separated names from {', '.join(ATTACK_NAMES)}{did_you_mean(attack, ATTACK_NAMES)}",
                )
        check_run_options(self)
        check_temperature_option(self.temperature)
        if self.targets is not None:
            parse_targets(self.targets)

    def flat(self) -> dict[str, Any]:
        """Every field, the tracing options spread among them as run.json stores them (``accuracy``:
        the accuracy options that differ from their defaults)."""
        d = asdict(self)
        trace = d.pop("trace")
        accuracy = self.trace.accuracy()
        for name in ACCURACY_FIELDS:
            trace.pop(name)
        return {**d, **trace, "accuracy": accuracy}

    def identity(self) -> dict:
        """The fields that change results, as a dict (``top_classes`` only when set, ``temperature``
        only when != 1, a tracing option of ``TraceOptions`` not in ``IDENTITY_FIELDS`` only when
        it differs from its default, the accuracy options in ``accuracy``)."""
        d = self.flat()
        # an option left at its default is left out, so runs made before it existed keep their fingerprint
        out = {k: d[k] for k in IDENTITY_FIELDS if not (k in OPTIONAL_IDENTITY and _same(d[k], OPTIONAL_IDENTITY[k]))}
        # a tracing option added to TraceOptions later enters the identity by itself, when set
        later = [f for f in fields(TraceOptions) if f.metadata["group"] == "tracing" and f.name not in IDENTITY_FIELDS]
        out.update({f.name: d[f.name] for f in later if f.name != "continuation" and not _same(d[f.name], f.default)})
        # continuation where it applies: runs made before it traced the pure flow, as "none" does
        if self.trace.damped_continuation:
            out["continuation"] = "damped"
        return out

    def fingerprint(self) -> str:
        """16 hex digits of the SHA-256 of the identity (fingerprint version 1: options only, no
        batch size; see ``fingerprint()`` for the run's full fingerprint)."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()[:16]

    def options_fingerprint(self) -> str:
        """16 hex digits of the options that change results, batch size included (no content)."""
        payload = {**self.identity(), "batch_size": self.trace.batch_size}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def with_class_defaults(self, n_classes: int) -> RunConfig:
        """This configuration with the many-class defaults filled in for a model with ``n_classes``
        classes, its target rule checked against C (before any work).

        ``targets`` becomes ``top:9`` when C > 10 and it was not given (it stays None, i.e. ``all``,
        for C <= 10, so that the fingerprints of ten-class runs do not change); ``top_classes``
        becomes 20 when C > 100 and it was not given. Both then enter run.json and the fingerprint.

        Example:
            >>> c = RunConfig().with_class_defaults(1000)
            >>> c.targets, c.trace.top_classes
            ('top:9', 20)
        """
        targets = self.targets
        if targets is None and n_classes > MANY_CLASSES:
            targets = default_targets(n_classes)
        if targets is not None:
            parse_targets(targets).check(n_classes)
        top = self.trace.top_classes if self.trace.top_classes is not None else default_top_classes(n_classes)
        return replace(self, targets=targets, trace=self.trace.replace(top_classes=top))

    def run_json_entries(self) -> dict:
        """The ``config`` entry of run.json: the fields not stored at its top level."""
        stored_elsewhere = {*TOP_LEVEL_FIELDS, "data"}
        return {k: v for k, v in self.flat().items() if k not in stored_elsewhere}

    @classmethod
    def from_run_info(cls, info: Mapping[str, Any]) -> RunConfig:
        """The configuration recorded in a run.json, old (full ``config``) or new (split) layout.

        Example:
            >>> config = RunConfig(images=20)
            >>> info = {"fingerprint": config.fingerprint(), "config": config.run_json_entries()}
            >>> RunConfig.from_run_info(info) == config
            True
        """
        stored = dict(info.get("config") or {})
        for name in TOP_LEVEL_FIELDS:
            if name not in stored and name in info:
                stored[name] = info[name]
        if "data" not in stored and REQUESTED_DATA_KEY in info:
            stored["data"] = info[REQUESTED_DATA_KEY]
        stored.setdefault("continuation", "none")  # recorded before it existed: the pure flow
        known = {f.name for f in fields(cls)} - {"trace"}
        values = {k: v for k, v in stored.items() if k in known}
        for name in ("input_range", "resize"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        if "baselines" in values:
            values["baselines"] = tuple(values["baselines"])
        return cls(**values, trace=TraceOptions.from_mapping(stored))


def _count(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def check_model_name(model: str) -> None:
    """Refuse an unknown zoo name with a suggestion; names with ``:``, a path separator or a file
    suffix (user models, files) are left to the model loader."""
    if not isinstance(model, str) or not model:
        raise bad_argument(spell("model"), model, "a model name (frmargin assets lists them)")
    if ":" in model or "/" in model or "." in model:
        return
    from ..models.mobilenet import IMAGENET_MODELS
    from ..models.registry import MODELS

    known = [*MODELS, *IMAGENET_MODELS]
    if model not in known:
        raise bad_argument(spell("model"), model, f"one of {', '.join(known)}{did_you_mean(model, known)}")


def check_device(device: str) -> None:
    """Refuse a device torch cannot parse, and CUDA where there is none (before any work)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise bad_argument(spell("device"), device, "cpu, cuda, cuda:N or auto") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise bad_argument(spell("device"), device, "cpu: CUDA is not available here (use --device cpu or auto)")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise bad_argument(spell("device"), device, f"a CUDA index below {torch.cuda.device_count()}")
    elif parsed.type not in ("cpu", "mps"):
        raise bad_argument(spell("device"), device, "cpu, cuda, cuda:N or auto")


def _same(a: object, b: object) -> bool:
    return (tuple(a) if isinstance(a, (list, tuple)) else a) == b


def check_run_options(config: RunConfig) -> None:
    """Raise FrmarginError naming the first bad option outside the tracer's (before any work): baselines,
    input range, box inside it, the box margin estimate, normalization, resize, weights checksum."""
    if config.baselines:
        from ..baselines import require_foolbox

        require_foolbox()  # the attacks extra is missing: said now, not after every path is traced
    rng = config.input_range
    try:
        lo, hi = (float(v) for v in rng)
    except (TypeError, ValueError):
        raise bad_argument(spell("input_range"), rng, "LO,HI (e.g. 0,1)") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise bad_argument(spell("input_range"), rng, "finite LO < HI (e.g. 0,1)")
    box = config.trace.box
    if box is not None and not (lo <= box[0] and box[1] <= hi):
        raise bad_argument(spell("box"), box, f"a box inside the input range [{lo}, {hi}]")
    parse_box_margin(config.box_margin)  # all, none or candidates:FACTOR
    if config.normalize is not None:
        from ..models.custom import parse_normalize

        parse_normalize(config.normalize)
    if config.resize is not None and not (
        len(config.resize) == 2 and all(isinstance(v, int) and v >= 1 for v in config.resize)
    ):
        raise bad_argument(spell("resize"), config.resize, "H,W with positive integers")
    sha = config.weights_sha256
    if sha is not None and not (len(sha) == 64 and all(c in "0123456789abcdefABCDEF" for c in sha)):
        raise bad_argument(spell("weights_sha256"), sha, "64 hex digits")
    if sha is not None and config.weights is None:
        raise bad_argument(spell("weights_sha256"), sha, "it only together with --weights FILE")
    _check_model_options(config)


def _check_model_options(config: RunConfig) -> None:
    """--weights-key, --output and the options of timm and RobustBench models."""
    from ..models.ecosystem import check_ecosystem_options
    from ..models.outputs import parse_output

    key = config.weights_key
    if key is not None and (config.weights is None or not isinstance(key, str) or not key):
        raise bad_argument(spell("weights_key"), key, "a key path (e.g. state_dict) together with --weights FILE")
    parse_output(config.output, spell("output"))
    c = config
    check_ecosystem_options(spell, c.model, c.weights, c.threat_model, c.model_dir, c.model_dataset)


def check_temperature_option(value: object) -> float | str:
    """``value`` when it is ``"auto"`` or a finite number > 0; else FrmarginError naming ``temperature``."""
    if value == "auto":
        return "auto"
    from ..temperature import check_temperature

    return check_temperature(value, spell("temperature"))

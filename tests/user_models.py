"""Models as users have them, for the tests of checkpoints, outputs and ecosystem names.

``SOURCE`` is a user's model file: two families (a CNN with batch norm, an MLP with layer norm)
on 1x8x8 images of three synthetic classes (a bright bar in the top, middle or bottom rows), the
CNN behind a Hugging Face-style output (an ``OrderedDict`` with attribute access, as
``transformers``' ``ModelOutput``), a dict and a tuple. ``STAND_INS`` are packages with the
interfaces of timm (``create_model``) and RobustBench (``robustbench.utils.load_model``), for
machines where neither library imports. ``cuda_tagged()`` makes ``torch.save`` record a CUDA
device for every storage, as a file saved from a GPU does, without a GPU.
"""

from __future__ import annotations

import contextlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from frmargin import cli

N_CLASSES = 3
MODULE = "frm_user_models"
SOURCE = textwrap.dedent(
    """
    from collections import OrderedDict

    import torch
    from torch import nn


    class CNN(nn.Module):
        def __init__(self, classes=3, width=4):
            super().__init__()
            self.conv = nn.Conv2d(1, width, 3, padding=1)
            self.bn = nn.BatchNorm2d(width)
            self.fc = nn.Linear(width * 64, classes)

        def forward(self, x):
            return self.fc(torch.tanh(self.bn(self.conv(x))).flatten(1))


    class MLP(nn.Module):
        def __init__(self, classes=3):
            super().__init__()
            self.hidden = nn.Linear(64, 16)
            self.norm = nn.LayerNorm(16)
            self.out = nn.Linear(16, classes)

        def forward(self, x):
            return self.out(torch.tanh(self.norm(self.hidden(x.flatten(1)))))


    class ImageClassifierOutput(OrderedDict):
        # as transformers' ModelOutput: a dict whose entries are attributes too, None entries left out
        def __init__(self, logits=None, hidden_states=None):
            super().__init__((k, v) for k, v in (("logits", logits), ("hidden_states", hidden_states)) if v is not None)

        def __getattr__(self, name):
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name) from None

        def to_tuple(self):
            return tuple(self.values())


    class Wrapped(nn.Module):
        # the CNN under one name; `kind` says what forward returns
        def __init__(self, kind):
            super().__init__()
            self.net, self.kind = CNN(), kind

        def forward(self, x):
            z = self.net(x)
            if self.kind == "hf":
                return ImageClassifierOutput(logits=z, hidden_states=(x,))
            if self.kind == "dict":
                return {"features": x.flatten(1), "scores": z}
            if self.kind == "tuple":
                return (z, x)
            if self.kind == "features":
                return {"features": x.flatten(1)}
            return z


    def cnn():
        torch.manual_seed(0)
        return CNN()


    def cnn_wide():
        torch.manual_seed(0)
        return CNN(width=6)


    def mlp():
        torch.manual_seed(0)
        return MLP()


    def plain():
        return Wrapped("plain")


    def hf():
        return Wrapped("hf")


    def dict_out():
        return Wrapped("dict")


    def tuple_out():
        return Wrapped("tuple")


    def features_only():
        return Wrapped("features")
    """
)

STAND_INS = {
    "timm/__init__.py": '''
        """A stand-in with timm's interface: create_model(name, pretrained, num_classes)."""
        from frm_user_models import CNN, MLP

        CALLS = []
        _MODELS = {"tiny_cnn": CNN, "tiny_mlp": MLP}


        def create_model(model_name, pretrained=False, num_classes=1000, **kwargs):
            CALLS.append({"model_name": model_name, "pretrained": pretrained, "num_classes": num_classes})
            if pretrained:
                raise RuntimeError("the stand-in downloads nothing")
            if model_name not in _MODELS:
                raise RuntimeError(f"Unknown model ({model_name})")
            net = _MODELS[model_name](classes=num_classes)
            net.pretrained_cfg = {"mean": (0.5,), "std": (0.25,), "num_classes": num_classes}
            return net
        ''',
    "robustbench/__init__.py": '"""A stand-in with RobustBench\'s interface."""\n',
    "robustbench/utils.py": '''
        """A stand-in with robustbench.utils.load_model's interface: DIR/DATASET/THREAT/NAME.pt."""
        from pathlib import Path

        import torch
        from frm_user_models import CNN

        CALLS = []
        _ZOO = {("cifar10", "Linf"): {"Tiny2024Bars": CNN}}


        def load_model(model_name, model_dir="./models", dataset="cifar10", threat_model="Linf", custom_checkpoint="", norm=None):
            CALLS.append({"model_name": model_name, "model_dir": str(model_dir), "dataset": dataset, "threat_model": threat_model})
            models = _ZOO[(dataset, threat_model)]
            model = models[model_name]()
            path = Path(model_dir) / dataset / threat_model / f"{model_name}.pt"
            if not path.is_file():
                raise ConnectionError(f"downloading {path} needs a network")
            checkpoint = torch.load(path, map_location=torch.device("cpu"))
            state = checkpoint.get("state_dict", checkpoint)
            model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
            return model.eval()
        ''',
}


def bars(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 8, 8) images in [0, 1]: noise plus a bright bar in rows 0-1, 3-4 or 6-7 by class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(N_CLASSES).repeat_interleave(n_per_class)
    images = 0.3 * torch.rand(len(labels), 1, 8, 8, generator=g)
    for i, c in enumerate(labels.tolist()):
        images[i, 0, 3 * c : 3 * c + 2] += 0.6
    return images.clamp(0, 1), labels


def train(net: nn.Module, steps: int = 60) -> nn.Module:
    """``net`` trained briefly on the bars, in eval mode with frozen parameters."""
    x, y = bars(40, seed=1)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval().requires_grad_(False)


def write_user_files(root: Path) -> None:
    """The model file (``frm_user_models.py``), the stand-in packages and ``bars.npz`` in ``root``."""
    (root / f"{MODULE}.py").write_text(SOURCE)
    for name, text in STAND_INS.items():
        (root / "stand_ins" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "stand_ins" / name).write_text(textwrap.dedent(text))
    x, y = bars(4, seed=2)
    np.savez(root / "bars.npz", images=(x.numpy() * 255).round().astype(np.uint8), labels=y.numpy())


def bars_data(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The images (as the loader reads them, float32 in [0, 1]) and labels of ``bars.npz``."""
    from frmargin.data import load_dataset

    ds = load_dataset(root / "bars.npz")
    return ds.images, ds.labels


@contextlib.contextmanager
def cuda_tagged() -> Iterator[None]:
    """Within the block, ``torch.save`` records the location ``cuda:0`` for every storage, as for
    tensors on a GPU (the bytes are the CPU tensors'); loading such a file needs a GPU or a
    ``map_location``."""
    state = {"on": True}
    entry = (-100, lambda storage: "cuda:0" if state["on"] else None, lambda storage, location: None)
    torch.serialization.register_package(*entry)
    try:
        yield
    finally:
        state["on"] = False
        registry = getattr(torch.serialization, "_package_registry", None)
        if isinstance(registry, list):
            registry[:] = [e for e in registry if e[1] is not entry[1]]


def frmargin(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit status, stdout, stderr); with ``capsys`` None, the output
    is left to pytest (and "" returned for it)."""
    argv = sys.argv
    sys.argv = ["frmargin", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = argv
    if capsys is None:
        return code, "", ""
    captured = capsys.readouterr()
    return code, captured.out, captured.err

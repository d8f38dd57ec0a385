"""The demos: ``frmargin demo`` (a small ResNet-20 run on CIFAR-10 with a DeepFool baseline and its
report, ``cifar``) and ``frmargin demo --toy`` (a 2-D five-class problem with fewer input
dimensions than classes, where shielding is genuinely geometric, ``toy``)."""

from __future__ import annotations

__all__ = ["run_demo", "run_toy_demo"]

from .cifar import run_demo
from .toy import run_toy_demo

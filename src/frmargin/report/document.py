"""A report page as a list of typed blocks: heading, text, caveat (a warning), table, figure.

Example:
    >>> doc = Document("frmargin report")
    >>> doc.heading("Run")
    >>> doc.table(pd.DataFrame({"field": ["model"], "value": ["resnet20"]}))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Heading:
    """A section heading of ``level`` 2 (section) or 3 (subsection)."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    """A paragraph; `code` spans and line breaks are rendered."""

    text: str


@dataclass(frozen=True)
class Caveat:
    """A highlighted caveat."""

    text: str


@dataclass(frozen=True)
class Table:
    """A DataFrame; ``css`` maps (row position, column) to an HTML class of that cell."""

    frame: pd.DataFrame
    css: dict[tuple[int, str], str] = field(default_factory=dict)


@dataclass(frozen=True)
class Figure:
    """A PNG file with its caption."""

    path: Path
    caption: str


Block = Heading | Text | Caveat | Table | Figure


@dataclass
class Document:
    """A report as a list of blocks, rendered to Markdown and to HTML by ``render``."""

    title: str
    blocks: list[Block] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        """Append a heading."""
        self.blocks.append(Heading(text, level))

    def text(self, text: str) -> None:
        """Append a paragraph."""
        self.blocks.append(Text(text))

    def warning(self, text: str) -> None:
        """Append a caveat."""
        self.blocks.append(Caveat(text))

    def table(self, frame: pd.DataFrame, css: dict[tuple[int, str], str] | None = None) -> None:
        """Append a table, with optional per-cell HTML classes."""
        self.blocks.append(Table(frame, css or {}))

    def figure(self, path: Path, caption: str) -> None:
        """Append a figure."""
        self.blocks.append(Figure(Path(path), caption))

"""A report page as a list of typed blocks: heading, text, caveat, table, figure, summary, details.

``Summary`` is the typed findings block every page starts with (single, comparison and study
pages build one and append it with ``Document.summary``); ``Details`` is folded raw text.

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


@dataclass(frozen=True)
class Headline:
    """One headline number: ``label``, its formatted ``value`` (with interval) and a short ``note``."""

    label: str
    value: str
    note: str = ""


@dataclass(frozen=True)
class Verdict:
    """One claim's verdict ("supported", "mixed", "not supported", "not tested") and its reason."""

    claim: str
    verdict: str
    reason: str = ""


@dataclass(frozen=True)
class Summary:
    """The findings block at the top of a page.

    Attributes:
        facts: (field, text) pairs: model, data, accuracy, paths, box...
        headlines: three to six headline numbers with their intervals.
        verdicts: the claims' verdicts (may be empty).
        findings: one-sentence findings in plain words (may be empty).
    """

    facts: tuple[tuple[str, str], ...]
    headlines: tuple[Headline, ...]
    verdicts: tuple[Verdict, ...] = ()
    findings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Details:
    """Raw text (e.g. JSON) folded under a one-line ``summary``."""

    summary: str
    text: str


Block = Heading | Text | Caveat | Table | Figure | Summary | Details


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

    def summary(self, summary: Summary) -> None:
        """Append a findings block (see ``Summary``)."""
        self.blocks.append(summary)

    def details(self, summary: str, text: str) -> None:
        """Append raw text folded under ``summary``."""
        self.blocks.append(Details(summary, text))

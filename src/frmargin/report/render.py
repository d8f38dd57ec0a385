"""Render a ``Document`` to Markdown (figures linked) and to self-contained HTML (figures inlined).

Example:
    >>> write_document(doc, Path("runs/resnet20"))
    PosixPath('runs/resnet20/report.html')
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from frmargin.report.css import CSS, VERDICT_CSS
from frmargin.report.document import Caveat, Details, Document, Figure, Heading, Summary, Table, Text
from frmargin.report.format import text_frame


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table of ``frame``'s cells as text (see ``format.text_frame``)."""
    cells = text_frame(frame)
    header = [str(c) for c in cells.columns]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in values) + " |"

    rows = [line(header), "|" + "|".join("---" for _ in header) + "|"]
    rows += [line(r) for r in cells.itertuples(index=False)]
    return "\n".join(rows)


def html_table(frame: pd.DataFrame, css: dict[tuple[int, str], str]) -> str:
    """An HTML table; text columns left-aligned, ``css`` adds classes to cells."""
    cells = text_frame(frame)
    text_columns = {c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])}
    head = "".join(
        f'<th class="{"text" if c in text_columns else ""}">{html.escape(str(c))}</th>' for c in cells.columns
    )
    body = []
    for i, row in enumerate(cells.itertuples(index=False)):
        tds = []
        for column, value in zip(cells.columns, row):
            classes = " ".join(filter(None, ["text" if column in text_columns else "", css.get((i, column), "")]))
            tds.append(f'<td class="{classes}">{html.escape(str(value))}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_markdown(doc: Document, base: Path) -> str:
    """Markdown with figures linked relative to ``base``."""
    out = [f"# {doc.title}", ""]
    for block in doc.blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Text):
            out += [block.text, ""]
        elif isinstance(block, Caveat):
            out += [f"> **Warning:** {block.text}", ""]
        elif isinstance(block, Table):
            out += [markdown_table(block.frame), ""]
        elif isinstance(block, Figure):
            out += [f"![{block.caption}]({_relative(block.path, base)})", "", f"*{block.caption}*", ""]
        elif isinstance(block, Summary):
            out += _summary_markdown(block)
        elif isinstance(block, Details):
            out += [f"<details><summary>{block.summary}</summary>", "", "```", block.text, "```", "", "</details>", ""]
    return "\n".join(out)


def _summary_markdown(summary: Summary) -> list[str]:
    out = ["## Summary", "", " · ".join(f"**{k}**: {v}" for k, v in summary.facts), ""]
    out += [f"- **{h.label}**: {h.value}" + (f" ({h.note})" if h.note else "") for h in summary.headlines]
    out.append("")
    if summary.findings:
        out += [f"- {f}" for f in summary.findings] + [""]
    if summary.verdicts:
        out += ["**The paper's claims**", ""]
        out += [f"- *{v.verdict}*: {v.claim}" + (f" ({v.reason})" if v.reason else "") for v in summary.verdicts]
        out.append("")
    return out


def _summary_html(summary: Summary) -> str:
    """The findings block: facts line, headline cards, findings and verdict list (no table)."""
    facts = " ".join(f"<span class='fact'><b>{html.escape(k)}</b> {html.escape(v)}</span>" for k, v in summary.facts)
    cards = "".join(
        f"<div class='headline'><div class='label'>{html.escape(h.label)}</div>"
        f"<div class='value'>{html.escape(h.value)}</div><div class='hnote'>{html.escape(h.note)}</div></div>"
        for h in summary.headlines
    )
    parts = [f"<section id='summary' class='summary'><h2>Summary</h2><p class='facts'>{facts}</p>"]
    parts.append(f"<div class='headlines'>{cards}</div>")
    if summary.findings:
        parts.append("<ul class='findings'>" + "".join(f"<li>{_inline(f)}</li>" for f in summary.findings) + "</ul>")
    if summary.verdicts:
        items = "".join(
            f"<li><span class='badge {VERDICT_CSS.get(v.verdict, '')}'>{html.escape(v.verdict)}</span> "
            f"{html.escape(v.claim)}"
            + (f" <span class='reason'>({_inline(v.reason)})</span>" if v.reason else "")
            + "</li>"
            for v in summary.verdicts
        )
        parts.append(f"<h3>The paper's claims</h3><ul class='verdicts'>{items}</ul>")
    parts.append("</section>")
    return "".join(parts)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def render_html(doc: Document) -> str:
    """One self-contained HTML page: inline CSS, figures as base64 data URIs."""
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(doc.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(doc.title)}</h1>",
    ]
    for block in doc.blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Caveat):
            parts.append(f"<div class='warning' role='alert'>Warning: {_inline(block.text)}</div>")
        elif isinstance(block, Table):
            parts.append(html_table(block.frame, block.css))
        elif isinstance(block, Figure):
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            caption = html.escape(block.caption)
            parts.append(
                f"<figure><img alt='{caption}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{caption}</figcaption></figure>"
            )
        elif isinstance(block, Summary):
            parts.append(_summary_html(block))
        elif isinstance(block, Details):
            parts.append(
                f"<details><summary>{html.escape(block.summary)}</summary><pre>{html.escape(block.text)}</pre></details>"
            )
    parts.append("<p class='note'>Generated by frmargin report.</p></body></html>")
    return "\n".join(parts)


def _inline(text: str) -> str:
    """Escape, then render `code` spans and line breaks."""
    escaped = html.escape(text)
    pieces = escaped.split("`")
    escaped = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))
    return escaped.replace("\n", "<br>")


def write_document(doc: Document, out: Path) -> Path:
    """Write ``report.md`` and ``report.html`` of ``doc`` into ``out``; return the HTML's path."""
    (out / "report.md").write_text(render_markdown(doc, out))
    target = out / "report.html"
    target.write_text(render_html(doc))
    return target

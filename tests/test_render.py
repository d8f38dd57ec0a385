"""Tests of frmargin.report.document, .format and .render: typed blocks to Markdown and HTML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from frmargin.report.document import Caveat, Document, Figure, Heading, Table, Text
from frmargin.report.format import MISSING, format_cell, format_interval, format_rank, text_frame
from frmargin.report.render import html_table, markdown_table, render_html, render_markdown, write_document

PNG = b"\x89PNG\r\n\x1a\nfake"


@pytest.fixture
def doc(tmp_path: Path) -> Document:
    figure = tmp_path / "fig.png"
    figure.write_bytes(PNG)
    doc = Document("Title <1>")
    doc.heading("Section")
    doc.heading("Sub", level=3)
    doc.text("see `class_table.csv`\nnext")
    doc.warning("JPEG & co")
    doc.table(pd.DataFrame({"class": ["a|b", "c"], "x": [1.5, np.nan]}), {(1, "x"): "bad"})
    doc.figure(figure, "A figure")
    return doc


def test_blocks_are_typed(doc: Document):
    kinds = [type(b) for b in doc.blocks]
    assert kinds == [Heading, Heading, Text, Caveat, Table, Figure]
    assert doc.blocks[1] == Heading("Sub", 3)


def test_markdown(doc: Document, tmp_path: Path):
    text = render_markdown(doc, tmp_path)
    assert text.startswith("# Title <1>\n")
    assert "## Section" in text and "### Sub" in text
    assert "> **Warning:** JPEG & co" in text
    assert "| a\\|b | 1.50 |" in text and f"| c | {MISSING} |" in text
    assert "![A figure](fig.png)" in text and "*A figure*" in text


def test_html_is_escaped_and_self_contained(doc: Document):
    page = render_html(doc)
    assert "<title>Title &lt;1&gt;</title>" in page and "<style>" in page
    assert "<p>see <code>class_table.csv</code><br>next</p>" in page
    assert "<div class='warning' role='alert'>Warning: JPEG &amp; co</div>" in page
    assert '<td class="text">a|b</td>' in page and '<td class="bad">' in page
    assert "data:image/png;base64,iVBORw0KGgpmYWtl" in page and "fig.png" not in page


def test_write_document(doc: Document, tmp_path: Path):
    page = write_document(doc, tmp_path)
    assert page == tmp_path / "report.html"
    assert (tmp_path / "report.md").read_text().startswith("# Title")


def test_cells():
    assert format_cell(None) == MISSING and format_cell(np.nan) == MISSING
    assert format_cell(True) == "yes" and format_cell(np.int64(3)) == "3"
    assert format_cell(12345.6) == "12,346" and format_cell(0.00001234, 3) == "1.23e-05"
    assert format_cell(float("-inf")) == "-inf" and format_cell(2.0) == "2"
    assert format_interval(1.234, 1.1, 1.4) == "1.23 [1.10, 1.40]"
    assert format_interval(1.234, np.nan, 1.4) == "1.23" and format_interval(np.nan, 0, 1) == MISSING
    assert format_rank(3.0, 1.0, 4.5) == "3 [1, 4.5]"


def test_float_columns_share_decimals():
    frame = text_frame(pd.DataFrame({"v": [0.5, 12.25, 3.0]}))
    assert frame["v"].tolist() == ["0.50", "12.25", "3.00"]
    assert markdown_table(pd.DataFrame({"n": [1, 2]})).splitlines()[2] == "| 1 |"
    assert '<th class="">n</th>' in html_table(pd.DataFrame({"n": [1]}), {})


def test_summary_and_details_blocks_render_without_tables(tmp_path: Path):
    from frmargin.report.document import Headline, Summary, Verdict

    doc = Document("T")
    doc.summary(
        Summary(
            facts=(("model", "m<1>"),),
            headlines=(Headline("margin", "1.0 [0.9, 1.1]", "n=3"),),
            verdicts=(Verdict("claim A", "not tested", "no shielded path"),),
            findings=("see `x`",),
        )
    )
    doc.details("raw", '{"a": "<b>"}')
    page = render_html(doc)
    block = page[page.index("<section id='summary'") : page.index("</section>")]
    assert "<table" not in block and "m&lt;1&gt;" in block and "1.0 [0.9, 1.1]" in block
    assert "<span class='badge na'>not tested</span> claim A" in block and "<code>x</code>" in block
    assert "<details><summary>raw</summary><pre>{&quot;a&quot;: &quot;&lt;b&gt;&quot;}</pre></details>" in page
    markdown = render_markdown(doc, tmp_path)
    assert "## Summary" in markdown and "- **margin**: 1.0 [0.9, 1.1] (n=3)" in markdown
    assert "- *not tested*: claim A (no shielded path)" in markdown and "<details><summary>raw</summary>" in markdown

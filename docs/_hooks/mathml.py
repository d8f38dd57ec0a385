"""mkdocs hook: formulas written as ``$...$`` and ``$$...$$`` become MathML at build time.

``pymdownx.arithmatex`` (generic mode) keeps the TeX away from Markdown and wraps it in
``<span class="arithmatex">\\(...\\)</span>`` or ``<div class="arithmatex">\\[...\\]</div>``;
this hook converts each to MathML with ``latex2mathml``, which browsers render natively, so the
site needs no script and no download to show its formulas.
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.DOTALL)
BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.DOTALL)


def to_mathml(tex: str, display: str) -> str:
    """MathML of one formula (``display``: "inline" or "block")."""
    return convert(html.unescape(tex).strip(), display=display)


def render(page_html: str) -> str:
    """``page_html`` with every arithmatex span and block replaced by MathML."""
    page_html = BLOCK.sub(lambda m: f'<div class="math-block">{to_mathml(m.group(1), "block")}</div>', page_html)
    return INLINE.sub(lambda m: to_mathml(m.group(1), "inline"), page_html)


def on_page_content(html_text: str, page, config, files) -> str:  # mkdocs hook
    return render(html_text)

"""griffe extension for the API reference: read the package's docstrings as they are written.

The docstrings follow Google style with two habits griffe does not parse as intended:
``Example:`` (singular), which griffe takes for an admonition and renders its ``>>>`` lines as
text, becomes ``Examples:`` (a code section); a ``Methods:`` paragraph that describes the values
of the ``method`` argument (not methods of a class) becomes a bold run-in heading.
"""

from __future__ import annotations

import re

import griffe

SINGULAR_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
PROSE_SECTION = re.compile(r"^(\s*)(Methods):\s*$", re.MULTILINE)


def rewrite(text: str) -> str:
    """The docstring ``text`` with the two habits above rewritten."""
    text = SINGULAR_EXAMPLE.sub(r"\1Examples:", text)
    return PROSE_SECTION.sub(r"\1**\2.**", text)


class ProjectDocstrings(griffe.Extension):
    """Rewrite each docstring once, when griffe has loaded its object."""

    def on_instance(self, *, node, obj, agent, **kwargs) -> None:  # griffe extension hook
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)

"""Item bodies (markdown, as the contract says) as safe HTML for the partner page.

markdown-it-py, CommonMark preset, with raw HTML off: any ``<tag>`` in a body is shown as text, so
no element, attribute or event handler of the author's ever reaches the page. Links keep only
http, https and mailto URLs or relative ones (markdown-it decodes entities and percent-encodes
before the check, so ``&#106;avascript:`` or ``java&#x09;script:`` are caught as well); anything
else stays text. Images are off (a remote image would report who opened the item). Every link gets
``rel="nofollow noopener noreferrer"``. The page's Content-Security-Policy is the second fence.
"""
from __future__ import annotations

import re

from markdown_it import MarkdownIt
from markupsafe import Markup

SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
_BEFORE_PATH = re.compile(r"[^/?#]*")


def safe_link(url: str) -> bool:
    """A link target the page may carry: one of :data:`SAFE_SCHEMES`, or relative. Anything with a colon
    before its first ``/``, ``?`` or ``#`` names a scheme (or tries to hide one: ``java%09script:``)."""
    head = _BEFORE_PATH.match(url.strip()).group(0)
    return ":" not in head or head.split(":", 1)[0].lower() in SAFE_SCHEMES


def _with_rel(self, tokens, idx, options, env):
    tokens[idx].attrSet("rel", "nofollow noopener noreferrer")
    return self.renderToken(tokens, idx, options, env)


_MD = MarkdownIt("commonmark", {"html": False}).disable("image")
_MD.validateLink = safe_link
_MD.add_render_rule("link_open", _with_rel)


def render_markdown(text: str | None) -> Markup:
    """``text`` as sanitised HTML, ready for a template (already escaped where it needs to be)."""
    return Markup(_MD.render(text or ""))

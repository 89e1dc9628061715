"""Item bodies rendered as markdown, sanitised: formatting works; no raw HTML, script, event handler or
unsafe link survives (the same hostile bodies are opened in Chromium in test_portal_ui.py)."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from include.tg_sandbox.rich_text import render_markdown, safe_link

HOSTILE = [
    "<script>window.__xss = 1</script>",
    '<img src=x onerror="window.__xss = 2">',
    '<a href="javascript:window.__xss=3" onclick="window.__xss=3">raw link</a>',
    "[js](javascript:window.__xss=4)",
    "[JS upper](JAVASCRIPT:window.__xss=5)",
    "[entity](&#106;avascript:window.__xss=6)",
    "[tab](java&#x09;script:window.__xss=7)",
    "[spaced]( javascript:window.__xss=8 )",
    "[vb](vbscript:msgbox(1))",
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[file](file:///etc/passwd)",
    "<javascript:window.__xss=9>",
    "![img](javascript:window.__xss=10)",
    "![tracker](https://tracker.example/pixel.png)",
    '<iframe src="https://evil.example"></iframe>',
    '<svg onload="window.__xss=11"></svg>',
    "<style>body{display:none}</style>",
    '[ref][r]\n\n[r]: javascript:window.__xss=12',
    '<div onmouseover="window.__xss=13">hover</div>',
    "```html\n<script>window.__xss=14</script>\n```",
]
BENIGN = "# Heading\n\n**bold** and _em_, `code`, [docs](https://docs.example/a?b=1&c=2), [mail](mailto:ops@example.com), " \
         "[relative](/portal/)\n\n- one\n- two\n\n> quoted"
HOSTILE_BODY = "\n\n".join(HOSTILE) + "\n\n" + BENIGN


class Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


def elements(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Elements()
    parser.feed(html)
    return parser.found


def test_formatting_renders():
    html = str(render_markdown(BENIGN))
    tags = [tag for tag, _ in elements(html)]
    assert {"h1", "strong", "em", "code", "ul", "li", "blockquote", "a"} <= set(tags)
    hrefs = [attrs["href"] for tag, attrs in elements(html) if tag == "a"]
    assert hrefs == ["https://docs.example/a?b=1&c=2", "mailto:ops@example.com", "/portal/"]
    assert all(attrs["rel"] == "nofollow noopener noreferrer" for tag, attrs in elements(html) if tag == "a")


@pytest.mark.parametrize("body", HOSTILE)
def test_hostile_markdown_yields_no_active_markup(body):
    html = str(render_markdown(body))
    for tag, attrs in elements(html):
        assert tag in {"p", "a", "pre", "code", "em", "strong"}, (tag, html)
        assert not [name for name in attrs if name.startswith("on")], html
        if tag == "a":
            assert re.match(r"(https?:|mailto:|/|#|\?)", attrs["href"]) or ":" not in attrs["href"], html


def test_everything_at_once_and_none_and_empty():
    html = str(render_markdown(HOSTILE_BODY))
    assert not {"script", "img", "iframe", "svg", "style", "div"} & {tag for tag, _ in elements(html)}
    assert "javascript:" not in "".join(attrs.get("href") or "" for _, attrs in elements(html)).lower()
    assert str(render_markdown(None)) == str(render_markdown("")) == ""


@pytest.mark.parametrize("url, ok", [
    ("https://a.example/x:y", True), ("http://a", True), ("mailto:x@y", True), ("MAILTO:x@y", True),
    ("/portal/", True), ("a/b:c", True), ("#frag:x", True), ("?q=a:b", True), ("relative", True),
    ("javascript:x", False), (" javascript:x", False), ("java%09script:x", False), ("data:text/html,x", False),
    ("vbscript:x", False), ("file:///x", False), ("ftp://x", False),
])
def test_safe_link(url, ok):
    assert safe_link(url) is ok

"""A strict well-formedness check for the pages we write (stdlib parser, no network)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else 'nothing'}>")
        else:
            self.stack.pop()


def parse_page(html: str) -> list[tuple[str, dict[str, str | None]]]:
    """Assert the page is a well-formed HTML document; return its start tags with attributes."""
    assert html.lstrip().lower().startswith("<!doctype html>")
    checker = _Checker()
    checker.feed(html)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert not checker.stack, f"unclosed: {checker.stack}"
    return checker.tags


def external_references(html: str) -> list[str]:
    """URLs the page would fetch or link to outside itself."""
    return re.findall(
        r"""(?:src|href|action|srcset)\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]+)""", html, re.I
    ) + re.findall(r"url\(\s*['\"]?((?:https?:)?//[^)'\"]+)", html, re.I)

"""A strict well-formedness check for the pages we write (stdlib parser, no network)."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser

from auditcam.report.templates import template_dir

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
RAW_TEXT = {"script", "style"}


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.raw: dict[str, list[str]] = {tag: [] for tag in RAW_TEXT}

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in RAW_TEXT:
            self.raw[tag].append("")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_data(self, data):
        if self.stack and self.stack[-1] in RAW_TEXT:
            self.raw[self.stack[-1]][-1] += data

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else 'nothing'}>")
        else:
            self.stack.pop()


def _check(html: str) -> _Checker:
    assert html.lstrip().lower().startswith("<!doctype html>")
    checker = _Checker()
    checker.feed(html)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert not checker.stack, f"unclosed: {checker.stack}"
    return checker


def parse_page(html: str) -> list[tuple[str, dict[str, str | None]]]:
    """Assert the page is a well-formed HTML document; return its start tags with attributes."""
    return _check(html).tags


def raw_texts(html: str) -> dict[str, list[str]]:
    """The exact text inside each ``<script>`` and ``<style>`` element, by tag."""
    return _check(html).raw


def csp_directives(html: str) -> dict[str, list[str]]:
    """The page's one Content-Security-Policy meta tag, as directive -> sources."""
    tags = parse_page(html)
    policies = [a["content"] for t, a in tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert len(policies) == 1, policies
    directives = {}
    for part in policies[0].split(";"):
        name, *sources = part.split()
        directives[name] = sources
    return directives


def sha256_source(text: str) -> str:
    """The CSP hash source of an inline element's text, computed here independently."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def external_references(html: str) -> list[str]:
    """URLs the page would fetch or link to outside itself."""
    return re.findall(
        r"""(?:src|href|action|srcset)\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]+)""", html, re.I
    ) + re.findall(r"url\(\s*['\"]?((?:https?:)?//[^)'\"]+)", html, re.I)


def assert_self_contained(html: str) -> None:
    """The page inlines exactly one script and one stylesheet — the shipped report.js and
    report.css, byte for byte — and its CSP allows exactly their hashes, data: images and nothing else."""
    texts = raw_texts(html)
    folder = template_dir()
    assert texts["script"] == [(folder / "report.js").read_text(encoding="utf-8")]
    assert texts["style"] == [(folder / "report.css").read_text(encoding="utf-8")]
    csp = csp_directives(html)
    assert csp["default-src"] == ["'none'"] and csp["img-src"] == ["data:"]
    assert csp["script-src"] == [sha256_source(texts["script"][0])]
    assert csp["style-src"] == [sha256_source(texts["style"][0])]
    assert csp["base-uri"] == ["'none'"] and csp["form-action"] == ["'none'"]
    tags = parse_page(html)
    assert [a for t, a in tags if t == "script"] == [{}]  # no src, no other script
    assert not any(k.startswith("on") for _, attrs in tags for k in attrs)
    assert not any(t in ("iframe", "object", "embed", "link", "base", "form") for t, _ in tags)

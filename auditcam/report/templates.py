"""Find the report templates in an installed wheel or a source checkout, and load them into a
Jinja2 environment that escapes everything by default."""

from __future__ import annotations

from pathlib import Path

import jinja2

_PACKAGE = Path(__file__).resolve().parents[1]
# The wheel carries reports/templates as auditcam/templates; a checkout has it at the repo root.
CANDIDATES = (_PACKAGE / "templates", _PACKAGE.parent / "reports" / "templates")


def template_dir() -> Path:
    """The first existing template folder among :data:`CANDIDATES`."""
    for candidate in CANDIDATES:
        if (candidate / "report.html.j2").is_file():
            return candidate
    raise FileNotFoundError(f"auditcam's report templates are missing; looked in {', '.join(map(str, CANDIDATES))}")


def environment() -> jinja2.Environment:
    """Autoescape outright: ``select_autoescape`` would not escape a ``*.html.j2`` file."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )

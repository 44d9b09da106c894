"""Jinja2 over templates/ with autoescape on: every HTML Trellis produces goes through here.

Jinja2 is imported when the first page is rendered: the JSON capture path and most event
handlers never render one, so their cold starts do not pay for it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from chalicelib.config import TEMPLATES_DIR

if TYPE_CHECKING:
    from jinja2 import Environment


@functools.cache
def environment() -> Environment:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        # Everything is escaped except plain-text templates (.txt), where "&amp;" would be a bug.
        autoescape=select_autoescape(disabled_extensions=("txt",), default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_page(name: str, **context: Any) -> str:
    return environment().get_template(f"pages/{name}").render(**context)

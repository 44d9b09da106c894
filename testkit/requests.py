"""What a landing page's script sends with a form post, for the tests and the bench."""

from __future__ import annotations

from typing import Any

JSON_HEADERS = {"Content-Type": "application/json"}

# A form rendered long before any test's clock: what a landing page's script sends with a JSON post
# (a JSON submission without it is a bot's). Tests of the bot defence set their own.
RENDERED_LONG_AGO = "1577836800000"  # 2020-01-01T00:00:00Z in ms


def with_rendered_at(path: str, data: Any) -> Any:
    if path.startswith("/forms/") and isinstance(data, dict) and "rendered_at" not in data:
        return {**data, "rendered_at": RENDERED_LONG_AGO}
    return data

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

JSON_HEADERS = {"Content-Type": "application/json"}
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


def post_json(client: Any, path: str, data: Any, headers: dict[str, str] | None = None) -> Any:
    return client.http.post(path, headers={**JSON_HEADERS, **(headers or {})}, body=json.dumps(data))


def post_form(client: Any, path: str, data: dict[str, str], headers: dict[str, str] | None = None) -> Any:
    return client.http.post(path, headers={**FORM_HEADERS, **(headers or {})}, body=urlencode(data))


def body(response: Any) -> Any:
    return json.loads(response.body)


class RequestCounter:
    """Counts AWS API calls by operation name with botocore's event hooks."""

    def __init__(self, client: Any) -> None:
        self.calls: list[str] = []
        client.meta.events.register("before-call.*.*", self._record)

    def _record(self, model: Any, **_: Any) -> None:
        self.calls.append(model.name)

    def reset(self) -> None:
        self.calls.clear()

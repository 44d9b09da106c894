"""One decorator for every route: it checks the admin verdict (an admin route cannot forget it),
reads the body and query string into their pydantic models, maps domain errors to answers once
(``chalicelib.http.errors``), turns a returned model into JSON, and records the operation for
the OpenAPI document (``chalicelib.openapi``).

Models are named, not imported: ``import app`` must not load pydantic (a cold start pays for
it only when a route reads or answers JSON). Request models live in ``chalicelib.models``,
answers in ``chalicelib.http.bodies``.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from chalice.app import Authorizer, Chalice, Request, Response

from chalicelib.errors import TrellisError
from chalicelib.http.auth import require_admin
from chalicelib.http.errors import JSON, Headers, error_response
from chalicelib.http.requests import json_body, query

REQUEST_MODELS = "chalicelib.models"
ANSWER_MODELS = "chalicelib.http.bodies"
NO_STORE: Headers = {"Cache-Control": "no-store, max-age=0"}

# What a route does with a domain error: given the request, the error and the path's parameters.
ErrorAnswer = Callable[[Request, TrellisError, Mapping[str, str]], Response]


def json_errors(request: Request, error: TrellisError, params: Mapping[str, str]) -> Response:
    return error_response(error)


def page_errors(request: Request, error: TrellisError, params: Mapping[str, str]) -> Response:
    """The pages email links open answer errors as pages too, never cached."""
    return error_response(error, html=True, headers=dict(NO_STORE))


@dataclass(frozen=True)
class Reply:
    """One documented answer. ``body``: an answer model's name (JSON); ``media``: the media types
    (JSON first when there is a body); ``error``: the JSON is the ``Error`` model."""

    description: str
    body: Optional[str] = None
    media: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    error: bool = False

    @property
    def media_types(self) -> tuple[str, ...]:
        return self.media or ((JSON,) if self.body or self.error else ())


@dataclass(frozen=True)
class Operation:
    path: str
    method: str
    summary: str
    tag: str
    admin: bool
    replies: Mapping[int, Reply]
    errors: tuple[type[TrellisError], ...]
    description: str = ""
    body: Optional[str] = None  # a request model read from the JSON body
    query: Optional[str] = None  # a request model read from the query string
    request: Optional[str] = None  # a documented body the route reads itself: a model or a document part
    headers: tuple[str, ...] = ()  # request headers the route reads
    path_help: Mapping[str, str] = field(default_factory=dict)
    security: Optional[str] = None  # "session": the dashboard's cookie or the bearer token
    head_of: Optional[str] = None  # a HEAD answered as this GET: who sends it

    @property
    def path_parameters(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)


def model(module: str, name: str) -> type[Any]:
    found: type[Any] = getattr(importlib.import_module(module), name)
    return found


class Api:
    """The routes of a Chalice app, each declared with what its OpenAPI operation needs."""

    def __init__(self, app: Chalice) -> None:
        self.app = app
        self.operations: list[Operation] = []
        self._admin_authorizer: Optional[Authorizer] = None

    @property
    def request(self) -> Request:
        request = self.app.current_request
        assert request is not None, "only called while Chalice handles a request"
        return request

    def admin_authorizer(self, authorizer: Authorizer) -> Authorizer:
        self._admin_authorizer = authorizer
        return authorizer

    def route(
        self,
        path: str,
        methods: str | tuple[str, ...],
        *,
        summary: str,
        tag: str = "admin",
        ok: Optional[tuple[int, Reply]] = None,
        errors: tuple[type[TrellisError], ...] = (),
        replies: Optional[Mapping[int, Reply]] = None,
        admin: bool = False,
        body: Optional[str] = None,
        query_model: Optional[str] = None,
        request: Optional[str] = None,
        any_content: bool = False,
        errors_as: ErrorAnswer = json_errors,
        **doc: Any,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register ``handler`` for ``path``: it gets the path's parameters, ``body`` and ``query``
        when declared, and returns an answer model (JSON with ``ok``'s status) or a Response.

        ``any_content``: Chalice passes every Content-Type, so the route answers wrong ones itself
        (415 with its own body) instead of Chalice's generic reply.
        """
        names = (methods,) if isinstance(methods, str) else methods
        documented = dict(replies or {})
        if ok is not None:
            documented[ok[0]] = ok[1]
        ok_status = ok[0] if ok is not None else 200
        head_of = doc.pop("head_of", None)
        for method in names:
            if method == "HEAD":
                continue  # documented from its GET
            self.operations.append(
                Operation(
                    path,
                    method.lower(),
                    summary,
                    tag,
                    admin,
                    documented,
                    errors,
                    body=body,
                    query=query_model,
                    request=request,
                    head_of=head_of if method == "GET" and "HEAD" in names else None,
                    **doc,
                )
            )

        def register(handler: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(handler)
            def view(**params: str) -> Any:
                current = self.request
                try:
                    if admin:
                        require_admin(current)
                    arguments: dict[str, Any] = dict(params)
                    if body is not None:
                        arguments["body"] = json_body(current, model(REQUEST_MODELS, body))
                    if query_model is not None:
                        arguments["query"] = query(current, model(REQUEST_MODELS, query_model))
                    answer = handler(**arguments)
                except TrellisError as e:
                    return errors_as(current, e, params)
                if isinstance(answer, Response):
                    return answer
                headers: Headers = {**NO_STORE, "Content-Type": JSON} if admin else {"Content-Type": JSON}
                return Response(answer.to_json(), status_code=ok_status, headers=headers)

            options: dict[str, Any] = {"methods": list(names)}
            if any_content:
                options["content_types"] = ["*/*"]
            if admin:
                assert self._admin_authorizer is not None, "declare the admin authorizer first"
                options["authorizer"] = self._admin_authorizer
            self.app.route(path, **options)(view)
            return view

        return register

"""The typed HTTP layer: routes declared once (``endpoint``), errors mapped once (``errors``),
requests read (``requests``), the admin verdict (``auth``) and every JSON answer (``bodies``)."""

from chalicelib.http.endpoint import NO_STORE, Api, Operation, Reply, json_errors, page_errors
from chalicelib.http.errors import Headers, error_response
from chalicelib.http.requests import FORM, JSON

CSV = "text/csv"
GIF = "image/gif"
HTML = "text/html"

__all__ = [
    "CSV",
    "FORM",
    "GIF",
    "HTML",
    "JSON",
    "NO_STORE",
    "Api",
    "Headers",
    "Operation",
    "Reply",
    "error_response",
    "json_errors",
    "page_errors",
]

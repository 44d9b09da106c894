"""Trellis: Chalice routes and event sources. Bodies stay thin: the work is in chalicelib."""

from chalice.app import Chalice, Request, Response

from chalicelib import runtime, web

app = Chalice(app_name="trellis")


def _request() -> Request:
    request = app.current_request
    assert request is not None, "only called while Chalice handles a request"
    return request


@app.route("/health", methods=["GET"])
def health() -> dict[str, str]:
    return {"status": "ok"}


# content_types="*/*" lets Trellis answer unsupported encodings itself (415 with its JSON error
# body or an HTML page) instead of Chalice's generic reply.
@app.route("/forms/{form_id}", methods=["POST"], content_types=["*/*"])
def submit_form(form_id: str) -> Response:
    return web.submit_form(runtime.current(), form_id, _request())


@app.route("/forms/{form_id}", methods=["OPTIONS"])
def form_preflight(form_id: str) -> Response:
    return web.preflight(runtime.current(), form_id, _request())

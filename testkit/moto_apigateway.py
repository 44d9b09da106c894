"""TEST HELPER, not part of the app: lets moto's API Gateway take the Swagger 2.0 document
``chalice deploy`` sends.

moto 5.2's ``ImportRestApi`` and ``PutRestApi`` accept only OpenAPI 3 (a ``swagger`` key is refused
with ``InvalidOpenApiDocVersionException``) and read ``info.description``, which Chalice does not
send. Both are the same document to moto's importer (paths, methods and their
``x-amazon-apigateway-integration``), so the document is handed to moto as OpenAPI 3.0.1 with an
empty description. Only the end-to-end deploy test (tests/infra/test_team_deploy.py) uses it, around its
moto server; the deployed API's integrations (the function ARNs) are moto's as imported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

from moto.apigateway.models import APIGatewayBackend


def as_openapi3(api_doc: dict[str, Any]) -> dict[str, Any]:
    """The document with ``swagger: 2.0`` replaced by ``openapi: 3.0.1`` and a description."""
    doc = dict(api_doc)
    if doc.pop("swagger", None) is not None:
        doc["openapi"] = "3.0.1"
    info = dict(doc.get("info", {}))
    info.setdefault("description", "")
    doc["info"] = info
    return doc


@contextlib.contextmanager
def swagger2_accepted() -> Iterator[None]:
    """While open, moto's import and put of a REST API take Swagger 2.0 too."""
    original_import = APIGatewayBackend.import_rest_api
    original_put = APIGatewayBackend.put_rest_api

    def import_rest_api(self: APIGatewayBackend, api_doc: dict[str, Any], fail_on_warnings: bool) -> Any:
        return original_import(self, as_openapi3(api_doc), fail_on_warnings=False)

    def put_rest_api(
        self: APIGatewayBackend, function_id: str, api_doc: dict[str, Any], fail_on_warnings: bool, mode: str = "merge"
    ) -> Any:
        return original_put(self, function_id, as_openapi3(api_doc), fail_on_warnings=False, mode=mode)

    with (
        mock.patch.object(APIGatewayBackend, "import_rest_api", import_rest_api),
        mock.patch.object(APIGatewayBackend, "put_rest_api", put_rest_api),
    ):
        yield

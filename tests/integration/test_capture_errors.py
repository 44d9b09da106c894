"""Rejected submissions: a clear 4xx naming each bad field, and nothing written."""

from __future__ import annotations

import json

import pytest

from chalicelib.config import MAX_BODY_BYTES
from tests.helpers import body, post_form, post_json

VALID_EBOOK = {"email": "dee@example.com", "first_name": "Dee", "consent": True}


@pytest.mark.parametrize(
    ("form_id", "data", "bad_fields"),
    [
        ("newsletter", {"consent": True}, {"email"}),
        ("newsletter", {"email": "not-an-address", "consent": True}, {"email"}),
        ("newsletter", {"email": "a@b", "consent": True}, {"email"}),
        ("newsletter", {"email": 42, "consent": True}, {"email"}),
        ("newsletter", {"email": "ann@example.com", "consent": True, "first_name": "x" * 101}, {"first_name"}),
        ("newsletter", {"email": "ann@example.com", "consent": True, "first_name": {"a": 1}}, {"first_name"}),
        ("ebook", {"email": "dee@example.com", "consent": True}, {"first_name"}),
        ("ebook", {**VALID_EBOOK, "phone": "call me"}, {"phone"}),
        ("ebook", {**VALID_EBOOK, "company_size": "huge"}, {"company_size"}),
        ("ebook", {**VALID_EBOOK, "country": "Germany"}, {"country"}),
        ("ebook", {**VALID_EBOOK, "page_url": "javascript:alert(1)"}, {"page_url"}),
        ("ebook", {**VALID_EBOOK, "referrer": "ftp://x.example/"}, {"referrer"}),
        ("ebook", {**VALID_EBOOK, "utm_source": "s" * 201}, {"utm_source"}),
        ("ebook", {"email": "bad", "consent": False}, {"email", "first_name", "consent"}),
    ],
)
def test_bad_fields_get_400_naming_each_field_and_store_nothing(client, table_items, form_id, data, bad_fields):
    response = post_json(client, f"/forms/{form_id}", data)

    assert response.status_code == 400
    answer = body(response)
    assert answer["error"] == "validation_error"
    assert set(answer["fields"]) == bad_fields
    assert all(isinstance(message, str) and message for message in answer["fields"].values())
    assert table_items() == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('"just a string"', "JSON object"),
        ("", "JSON object"),
    ],
)
def test_malformed_json_body_is_400_on_body(client, table_items, raw, reason):
    response = client.http.post("/forms/newsletter", headers={"Content-Type": "application/json"}, body=raw)

    assert response.status_code == 400
    assert reason in body(response)["fields"]["body"]
    assert table_items() == []


def test_non_utf8_body_is_400(client, table_items):
    response = client.http.post(
        "/forms/newsletter", headers={"Content-Type": "application/x-www-form-urlencoded"}, body=b"email=\xff\xfe"
    )

    assert response.status_code == 400
    assert "UTF-8" in response.body.decode()
    assert table_items() == []


def test_unknown_form_is_404_json(client, table_items):
    response = post_json(client, "/forms/nope", {"email": "a@example.com"})

    assert response.status_code == 404
    assert body(response)["error"] == "not_found"
    assert table_items() == []


def test_unknown_form_is_404_page_for_html_post(client, table_items):
    response = post_form(client, "/forms/nope", {"email": "a@example.com"})

    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("text/html")
    assert "does not exist" in response.body.decode()
    assert table_items() == []


def test_body_over_limit_is_413(client, table_items):
    padding = "x" * (MAX_BODY_BYTES + 1)
    response = client.http.post(
        "/forms/newsletter",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"email": "a@example.com", "consent": True, "pad": padding}),
    )

    assert response.status_code == 413
    assert body(response) == {
        "error": "payload_too_large",
        "message": f"request body is larger than {MAX_BODY_BYTES} bytes",
        "limit_bytes": MAX_BODY_BYTES,
    }
    assert table_items() == []


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data; boundary=x", "application/xml", None])
def test_other_content_types_are_415(client, table_items, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.http.post("/forms/newsletter", headers=headers, body="email=a@example.com")

    assert response.status_code == 415
    answer = body(response)
    assert answer["error"] == "unsupported_media_type"
    assert answer["accepted"] == ["application/json", "application/x-www-form-urlencoded"]
    assert table_items() == []


def test_json_with_charset_parameter_is_accepted(client):
    response = client.http.post(
        "/forms/newsletter",
        headers={"Content-Type": "application/json; charset=utf-8"},
        body=json.dumps({"email": "e@example.com", "consent": True}),
    )

    assert response.status_code == 200


def test_html_post_with_bad_input_gets_a_readable_page(client, table_items):
    response = post_form(
        client,
        "/forms/ebook",
        {"email": "not-an-address", "first_name": "<script>alert(1)</script>"},
        headers={"Referer": "https://landing.example/ebook"},
    )

    page = response.body.decode()
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/html")
    assert "email" in page and "consent" in page
    assert 'href="https://landing.example/ebook"' in page
    assert "<script>" not in page
    assert table_items() == []


def test_html_error_page_never_links_to_a_script_referer(client):
    response = post_form(client, "/forms/ebook", {"email": "bad"}, headers={"Referer": "javascript:alert(1)"})

    assert response.status_code == 400
    assert "javascript:" not in response.body.decode()


def test_json_nested_deeper_than_the_parser_goes_is_400_not_500(client, table_items):
    before = table_items()
    raw = "[" * 3000 + "]" * 3000  # 6 KB: inside the size limit, past Python's recursion limit
    response = client.http.post("/forms/newsletter", headers={"Content-Type": "application/json"}, body=raw)
    assert response.status_code == 400 and body(response)["fields"] == {"body": "JSON nested too deeply"}
    assert table_items() == before

"""GDPR export and erase, and the CSV export of the lead list."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from chalicelib.entities import lead_id_for
from tests.conftest import ADMIN_TOKEN
from tests.helpers import body, post_json

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ADA = {
    "email": "Ada.Lovelace@Example.com",
    "first_name": "Ada",
    "company": '=HYPERLINK("http://evil.example","click")',
    "job_title": "CTO",
    "consent": True,
    "utm_source": "google",
    "utm_medium": "cpc",
}
ADA_ID = lead_id_for("ada.lovelace@example.com")


def settle(deliver: Any) -> None:
    for _ in range(8):
        if not deliver():
            return
    raise AssertionError("the stream never went quiet")


@pytest.fixture
def ada(client, deliver) -> str:
    """Ada took the ebook (the delivery email went out) and is counted in the reports."""
    assert post_json(client, "/forms/ebook", ADA).status_code == 200
    post_json(client, "/forms/newsletter", {"email": "grace@example.com", "consent": True})
    settle(deliver)
    return ADA_ID


# -- GDPR export ------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", [ADA_ID, "ada.lovelace@example.com", quote("ADA.LOVELACE@example.com")])
def test_export_has_everything_stored_about_the_person_by_id_or_address(client, ada, who):
    response = client.http.get(f"/admin/leads/{who}/export", headers=AUTH)
    assert response.status_code == 200, response.body
    exported = body(response)

    assert exported["lead_id"] == ADA_ID
    assert exported["profile"]["email"] == "Ada.Lovelace@example.com"
    assert exported["profile"]["company"].startswith("=HYPERLINK")
    assert exported["profile"]["consent"]["status"] == "granted"
    assert exported["profile"]["first_touch"]["utm_source"] == "google"
    assert [e["type"] for e in exported["events"]] == ["form_submitted"]
    assert [m["message_id"] for m in exported["messages"]] == ["ebook-nurture.ebook-delivery"]
    assert [e["sequence_id"] for e in exported["enrolments"]] == ["ebook-nurture"]
    assert exported["handoffs"] == [] and exported["suppression"] is None
    assert "reached#lead" in exported["report_markers"]
    assert exported["exported_at"]
    # Key plumbing is not personal data and not part of the export.
    assert "pk" not in exported["profile"] and "lead_list" not in exported["profile"]


def test_export_of_an_unknown_person_is_a_404_and_a_bad_address_a_400(client, ada):
    unknown = client.http.get("/admin/leads/nobody@example.com/export", headers=AUTH)
    assert (unknown.status_code, body(unknown)["error"]) == (404, "not_found")
    assert client.http.get("/admin/leads/not-a-lead/export", headers=AUTH).status_code == 404
    bad = client.http.get("/admin/leads/a@@b/export", headers=AUTH)
    assert bad.status_code == 400 and "lead_id" in body(bad)["fields"]


# -- GDPR erase -------------------------------------------------------------------------------------


def test_erase_deletes_the_partition_keeps_anonymous_counters_and_suppresses_the_address(
    client, ada, table_items, deliver, tick, outbox, clock
):
    funnel_before = body(client.http.get("/admin/reports/funnel", headers=AUTH))

    response = client.http.delete("/admin/leads/ada.lovelace@example.com", headers=AUTH)

    assert response.status_code == 200, response.body
    result = body(response)
    assert (result["lead_id"], result["erased"], result["suppressed"]) == (ADA_ID, True, True)
    left = [i for i in table_items() if ADA_ID in i["pk"]]
    assert [(i["pk"], i["sk"], i["reason"]) for i in left] == [(f"SUPPRESS#{ADA_ID}", "SUPPRESS", "erased")]
    assert result["items_deleted"] >= 6  # profile, event, enrolment, message, markers
    # Nothing left anywhere that names her.
    # As a word: random hex (session ids, rate-limit keys, message ids) may hold the letters "ada".
    naming = [item for item in table_items() if re.search(r"\bada\b", json.dumps(item, default=str).lower())]
    assert not naming, naming
    assert client.http.get(f"/admin/leads/{ADA_ID}", headers=AUTH).status_code == 404
    assert body(client.http.get("/admin/reports/funnel", headers=AUTH))["total"] == funnel_before["total"]
    settle(deliver)  # the deletions stream by without effect

    # She signs up again later: stored as a new lead, but never mailed.
    mails_before = len(outbox())
    again = post_json(client, "/forms/newsletter", {"email": "ada.lovelace@example.com", "consent": True})
    assert again.status_code == 200 and body(again)["lead_id"] == ADA_ID
    settle(deliver)
    for _ in range(10):
        clock.advance(86400)
        tick()
        settle(deliver)
    assert [m for m in outbox()[mails_before:] if "ada" in str(m["To"]).lower()] == []
    assert len(outbox()) > mails_before  # others were mailed meanwhile: the dispatcher did run


def test_erasing_twice_or_an_unknown_lead_is_a_404(client, ada):
    assert client.http.delete(f"/admin/leads/{ADA_ID}", headers=AUTH).status_code == 200
    again = client.http.delete(f"/admin/leads/{ADA_ID}", headers=AUTH)
    assert (again.status_code, body(again)["error"]) == (404, "not_found")


@pytest.mark.parametrize("method", ["get", "delete"])
def test_export_and_erase_need_the_token(client, ada, table_items, method):
    before = table_items()
    path = f"/admin/leads/{ADA_ID}" + ("/export" if method == "get" else "")
    for headers in ({}, {"Authorization": "Bearer " + "x" * 40}):
        response = getattr(client.http, method)(path, headers=headers)
        assert response.status_code == 401
        assert b"ada" not in response.body.lower()
    assert table_items() == before


# -- CSV export -------------------------------------------------------------------------------------


def csv_rows(response: Any) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response.body.decode())))


def test_csv_export_pages_through_every_lead_with_the_filters(client, clock):
    for n in range(7):
        form = "ebook" if n % 2 else "newsletter"
        fields = {"email": f"lead{n}@example.com", "first_name": f"L{n}", "consent": True, "utm_source": "ads"}
        assert post_json(client, f"/forms/{form}", fields).status_code == 200
        clock.advance(60)

    seen: list[str] = []
    path = "/admin/export/leads.csv?form=ebook&limit=2"
    pages = 0
    while path:
        response = client.http.get(path, headers=AUTH)
        assert response.status_code == 200, response.body
        headers = {name.lower(): value for name, value in response.headers.items()}
        assert headers["content-type"] == "text/csv; charset=utf-8"
        assert "attachment" in headers["content-disposition"]
        rows = csv_rows(response)
        seen += [row["email"] for row in rows]
        pages += 1
        link = headers.get("link")
        if link is None:
            break
        url = link.removeprefix("<").split(">")[0]
        assert 'rel="next"' in link and "form=ebook" in url and "limit=2" in url
        parts = urlsplit(url)
        path = parts.path.removeprefix("/api") + "?" + parts.query
    assert seen == ["lead5@example.com", "lead3@example.com", "lead1@example.com"]  # newest first, each once
    assert pages == 2


def test_csv_has_profile_attribution_consent_and_defuses_formulas(client, ada):
    response = client.http.get("/admin/export/leads.csv", headers=AUTH)
    rows = {row["email"]: row for row in csv_rows(response)}
    row = rows["Ada.Lovelace@example.com"]
    assert (row["first_name"], row["job_title"], row["stage"], row["form"]) == ("Ada", "CTO", "lead", "ebook")
    assert (row["utm_source"], row["utm_medium"], row["consent_status"]) == ("google", "cpc", "granted")
    assert row["company"] == '\'=HYPERLINK("http://evil.example","click")'  # text to a spreadsheet, not a formula
    assert "custom_company_size" in row
    assert rows["grace@example.com"]["form"] == "newsletter"


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=0", "limit"), ("limit=5001", "limit"), ("stage=king", "stage"), ("cursor=x.y", "cursor")],
)
def test_csv_bad_parameters_are_a_400(client, query, field):
    response = client.http.get(f"/admin/export/leads.csv?{query}", headers=AUTH)
    assert response.status_code == 400 and field in body(response)["fields"]


def test_csv_needs_the_token(client, ada):
    response = client.http.get("/admin/export/leads.csv")
    assert response.status_code == 401 and b"Ada" not in response.body


def test_csv_pages_end_early_at_the_byte_cap_and_resume_after_the_last_row(client, clock, monkeypatch):
    from chalicelib import directory

    for n in range(5):
        fields = {"email": f"big{n}@example.com", "first_name": "B" * 90, "consent": True}
        assert post_json(client, "/forms/newsletter", fields).status_code == 200
        clock.advance(60)
    monkeypatch.setattr(directory, "CSV_PAGE_BYTES", 900)  # the header and two rows of ~300 bytes

    seen: list[str] = []
    path: str | None = "/admin/export/leads.csv?limit=5000"
    while path:
        response = client.http.get(path, headers=AUTH)
        assert response.status_code == 200 and len(response.body) <= 900
        seen += [row["email"] for row in csv_rows(response)]
        link = {k.lower(): v for k, v in response.headers.items()}.get("link")
        path = None
        if link:
            parts = urlsplit(link.removeprefix("<").split(">")[0])
            path = parts.path.removeprefix("/api") + "?" + parts.query
    assert seen == [f"big{n}@example.com" for n in reversed(range(5))]


def test_an_address_with_a_percent_sign_is_not_decoded_twice(client, deliver):
    fields = {"email": "a%41b@example.com", "consent": True}
    assert post_json(client, "/forms/newsletter", fields).status_code == 200
    # Fully encoded ("@" too), the path means the same whether or not the gateway decoded it.
    response = client.http.get(f"/admin/leads/{quote('a%41b@example.com', safe='')}/export", headers=AUTH)
    assert response.status_code == 200 and body(response)["lead_id"] == lead_id_for("a%41b@example.com")

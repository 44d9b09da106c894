"""The dashboard page: pure rendering from report dicts, and the session cookie that guards it.

The renderers take plain dicts; the HTTP functions get small stand-ins for the runtime and the
request (only what they read), with the table (sessions, sign-in throttle) in moto.
"""

from __future__ import annotations

import copy
import itertools
from datetime import timedelta
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any, Optional

import pytest

from chalicelib import aws, dashboard
from chalicelib.clock import FixedClock
from chalicelib.config import load_campaign
from chalicelib.credentials import CredentialsUnavailable, StaticAdminToken
from chalicelib.http.bodies import BroadcastList, FunnelReport, SequenceReport
from chalicelib.reports import MACHINE_METRICS, funnel_report, sequence_report
from chalicelib.store import Store
from chalicelib.tracking import TokenSigner
from tests.conftest import ADMIN_TOKEN, START, TEST_TOKEN_KEY

STAGES = ["captured", "lead", "mql", "sql", "opportunity", "customer"]


def row(reached: dict[str, int], *, spend=None, mql_seconds=None, sql_seconds=None) -> dict[str, Any]:
    """A funnel ROW as chalicelib.reports.funnel_row shapes it."""
    full = {stage: reached.get(stage, 0) for stage in STAGES}
    return {
        "reached": full,
        "off_funnel": {"recycled": 2, "disqualified": 1},
        "conversion": [
            {"from": a, "to": b, "rate": round(full[b] / full[a], 4) if full[a] else None}
            for a, b in itertools.pairwise(STAGES)
        ],
        "velocity": {
            "mql": {"leads": full["mql"], "median_seconds": mql_seconds},
            "sql": {"leads": full["sql"], "median_seconds": sql_seconds},
        },
        "spend": spend,
        "cost_per_lead": round(spend / full["captured"], 2) if spend and full["captured"] else None,
        "cost_per_sql": round(spend / full["sql"], 2) if spend and full["sql"] else None,
    }


def funnel(currency: Optional[str] = "EUR", source: str = "linkedin") -> dict[str, Any]:
    return {
        "campaign": "demo",
        "currency": currency,
        "stages": list(STAGES),
        "total": row(
            {"captured": 200, "lead": 120, "mql": 50, "sql": 20, "opportunity": 5, "customer": 0},
            spend=1000.0,
            mql_seconds=3.2 * 86400,
            sql_seconds=5 * 3600,
        ),
        "channels": [
            {"utm_source": source, "utm_medium": "paid", **row({"captured": 150, "sql": 15}, spend=900.0)},
            {"utm_source": "(direct)", "utm_medium": "(none)", **row({"captured": 50, "sql": 5})},
        ],
        "utm_campaigns": [{"utm_campaign": "spring", **row({"captured": 150})}],
        "bots_blocked": {"total": 7, "by_form": {"newsletter": {"honeypot": 4, "too_fast": 3}}},
    }


def step(sequence_id: str, step_id: str, subject: str, sent: int, **counts: int) -> dict[str, Any]:
    """A step row as chalicelib.reports shapes it: machines' opens and clicks are in no rate."""
    metrics = ("delivered", "opened", "clicked", "unsubscribed", "bounced", "complained")
    result: dict[str, Any] = {"sequence_id": sequence_id, "step_id": step_id, "subject": subject, "sent": sent}
    result.update({m: counts.get(m, 0) for m in (*metrics, *MACHINE_METRICS)})
    result["rates"] = {m: round(result[m] / sent, 4) if sent else None for m in metrics}
    return result


def sequences(warnings: Optional[list[str]] = None) -> dict[str, Any]:
    steps = [
        step(
            "nurture",
            "welcome",
            "Welcome aboard",
            100,
            delivered=98,
            opened=45,
            clicked=12,
            bounced=2,
            machine_opened=30,
            machine_clicked=9,
        ),
        step("nurture", "tip", "A tip for you", 80, delivered=80, opened=20, clicked=4, unsubscribed=3, complained=1),
    ]
    totals = step(
        "",
        "",
        "",
        180,
        delivered=178,
        opened=65,
        clicked=16,
        unsubscribed=3,
        bounced=2,
        complained=1,
        machine_opened=30,
        machine_clicked=9,
    )
    for key in ("sequence_id", "step_id", "subject"):
        del totals[key]
    return {
        "steps": steps,
        "totals": totals,
        "deliverability": {
            "bounce_rate": totals["rates"]["bounced"],
            "complaint_rate": totals["rates"]["complained"],
            "bounce_limit": 0.05,
            "complaint_limit": 0.001,
            "warnings": warnings or [],
        },
        "exits": {"total": {"stage:sql": 2}, "by_sequence": {"nurture": {"stage:sql": 2}}},
        "bots_blocked": 7,
    }


def render(funnel_data=None, sequence_data=None, title="Demo campaign") -> str:
    """The page from report data: the JSON shape (as the API answers it) read into the report
    models the dashboard reads, or the models themselves."""
    funnel_data = funnel_data if funnel_data is not None else funnel()
    sequence_data = sequence_data if sequence_data is not None else sequences()
    if isinstance(funnel_data, dict):
        funnel_data = FunnelReport.model_validate(funnel_data)
    if isinstance(sequence_data, dict):
        sequence_data = SequenceReport.model_validate(sequence_data)
    return dashboard.render_dashboard(funnel_data, sequence_data, campaign_title=title, now=START)


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text inside each element of interest."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, Optional[str]]]] = []
        self.texts: list[tuple[str, dict[str, Optional[str]], str]] = []
        self._open: list[tuple[str, dict[str, Optional[str]], list[str]]] = []
        self._in_step = False
        self._step_rows: list[list[str]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self._in_step = dict(attrs).get("class") == "step"
            if self._in_step:
                self._step_rows.append([])
        if tag in ("text", "td", "th", "p", "li"):
            self._open.append((tag, dict(attrs), []))

    def handle_data(self, data: str) -> None:
        for _, _, chunks in self._open:
            chunks.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1][0] == tag:
            name, attrs, chunks = self._open.pop()
            self.texts.append((name, attrs, "".join(chunks).strip()))
            if name == "td" and self._in_step:
                self._step_rows[-1].append(self.texts[-1][2])

    def find(self, tag: str, cls: str) -> list[dict[str, Optional[str]]]:
        return [a for t, a in self.tags if t == tag and cls in (a.get("class") or "").split()]

    def text_of(self, tag: str, cls: str) -> list[tuple[Optional[str], str]]:
        return [(a.get("data-stage"), text) for t, a, text in self.texts if t == tag and a.get("class") == cls]

    def step_rows(self) -> list[list[str]]:
        return self._step_rows


# -- the funnel chart -------------------------------------------------------------------------


def test_chart_has_one_bar_per_stage_with_its_count_and_proportional_width():
    page = Elements(render())

    bars = page.find("rect", "bar")
    assert [b["data-stage"] for b in bars] == STAGES
    assert [float(b["width"] or 0) for b in bars] == [430.0, 258.0, 107.5, 43.0, 10.8, 0.0]
    assert page.text_of("text", "count") == [
        ("captured", "200"),
        ("lead", "120"),
        ("mql", "50"),
        ("sql", "20"),
        ("opportunity", "5"),
        ("customer", "0"),
    ]
    # Stage to stage: lead/captured, mql/lead, ... and nothing on the first bar.
    assert page.text_of("text", "conversion") == [
        ("lead", "60.0%"),
        ("mql", "41.7%"),
        ("sql", "40.0%"),
        ("opportunity", "25.0%"),
        ("customer", "0.0%"),
    ]


def test_chart_follows_the_report_stage_list():
    data = funnel()
    data["stages"] = ["captured", "lead"]
    assert [b["data-stage"] for b in Elements(render(data)).find("rect", "bar")] == ["captured", "lead"]


def test_zero_data_page_renders_with_empty_bars_and_dashes():
    data = funnel(currency=None)
    data["total"] = row({})
    data["channels"], data["utm_campaigns"] = [], []
    data["bots_blocked"] = {"total": 0, "by_form": {}}
    empty = sequences()
    empty["steps"] = []
    empty["totals"] = {
        k: 0
        for k in ("sent", "delivered", "opened", "clicked", "unsubscribed", "bounced", "complained", *MACHINE_METRICS)
    }
    empty["totals"]["rates"] = dict.fromkeys(
        ("delivered", "opened", "clicked", "unsubscribed", "bounced", "complained")
    )
    empty["deliverability"].update(bounce_rate=None, complaint_rate=None)

    html = render(data, empty)
    page = Elements(html)

    assert [float(b["width"] or 0) for b in page.find("rect", "bar")] == [0.0] * 6
    assert {text for _, text in page.text_of("text", "conversion")} == {dashboard.DASH}
    assert "No leads captured yet." in html
    assert "No sequence steps yet." in html
    assert "deliverability-warnings" not in html


def test_page_renders_from_the_real_reports_of_an_empty_campaign():
    campaign = load_campaign("demo")

    html = render(funnel_report(campaign, {}, {}), sequence_report(campaign, {}, {}), title=campaign.title)

    page = Elements(html)
    assert len(page.find("rect", "bar")) == 6
    # Steps are listed from the campaign before anything is sent, with zero counts.
    expected = [(s_id, step.id, step.subject) for s_id, seq in campaign.sequences.items() for step in seq.steps]
    assert [tuple(cells[:3]) for cells in page.step_rows()] == expected
    assert {cells[3] for cells in page.step_rows()} == {"0"}
    # Nothing sent: people's opens and clicks are a dash with no count beside it; machines' are 0.
    assert {(cells[5], cells[6], cells[7], cells[8]) for cells in page.step_rows()} == {
        (dashboard.DASH,) * 2 + ("0",) * 2
    }


# -- tables -----------------------------------------------------------------------------------


def test_step_table_has_a_row_per_step_with_counts_and_rates():
    rows = Elements(render()).step_rows()

    # People's opens and clicks with their rates, then machines' as counts: in no rate.
    assert rows == [
        ["nurture", "welcome", "Welcome aboard", "100", "98", "45.0% (45)", "12.0% (12)", "30", "9", "0", "2", "0"],
        ["nurture", "tip", "A tip for you", "80", "80", "25.0% (20)", "5.0% (4)", "0", "0", "3", "0", "1"],
    ]


def test_step_table_shows_people_and_machines_apart_per_step_and_for_the_campaign():
    page = Elements(render())

    headers = [text for tag, _, text in page.texts if tag == "th"]
    emails = headers[headers.index("Sequence") : headers.index("Name")]  # up to the broadcasts' table
    assert emails[5:7] == ["People", "Machines"]
    assert emails[-4:] == ["Opened", "Clicked", "Opened", "Clicked"]  # the second header row, under them
    machine_cells = [text for tag, attrs, text in page.texts if tag == "td" and attrs.get("class") == "machine"]
    assert machine_cells == ["30", "9", "0", "0", "30", "9"]  # two steps, then the campaign's total
    total = [text for tag, attrs, text in page.texts if tag == "td" and attrs.get("class") == "people"][-2:]
    assert total == ["36.1% (65)", "8.9% (16)"]


def test_channel_table_shows_money_with_currency_and_human_durations():
    cells = [text for tag, _, text in Elements(render()).texts if tag == "td"]

    assert cells[:8] == ["linkedin / paid", "150", "15", "900.00 EUR", "6.00 EUR", "60.00 EUR", "—", "—"]
    assert "(direct) / (none)" in cells
    total = cells[cells.index("All channels") :][:8]
    assert total == ["All channels", "200", "20", "1,000.00 EUR", "5.00 EUR", "50.00 EUR", "3.2 d", "5 h"]


def test_money_without_a_currency_is_the_number_alone():
    cells = [text for tag, _, text in Elements(render(funnel(currency=None))).texts if tag == "td"]

    assert cells[:4] == ["linkedin / paid", "150", "15", "900.00"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "—"), (42, "42 s"), (90, "1.5 min"), (5 * 3600, "5 h"), (3.2 * 86400, "3.2 d"), (12 * 86400, "12 d")],
)
def test_durations_read_in_human_units(seconds, text):
    assert dashboard.format_duration(seconds) == text


# -- deliverability ---------------------------------------------------------------------------


def test_warnings_are_shown_prominently_when_present():
    warning = "Bounce rate 7.0% is above SES's 5%: SES may put the account under review."
    page = Elements(render(sequence_data=sequences([warning])))

    alert = [a for t, a in page.tags if t == "div" and a.get("id") == "deliverability-warnings"]
    assert alert and alert[0]["role"] == "alert" and "alert" in (alert[0]["class"] or "")
    assert ("li", {}, warning) in page.texts


def test_no_warning_box_without_warnings():
    html = render(sequence_data=sequences([]))

    assert "deliverability-warnings" not in html
    assert 'role="alert"' not in html


def test_rates_over_their_limit_are_flagged():
    data = sequences()  # complaint rate 1/180 = 0.56 %, over 0.1 %; bounce 1.1 %, under 5 %
    gauges = Elements(render(sequence_data=data)).find("div", "gauge")

    assert [("over" in (g["class"] or "").split()) for g in gauges] == [False, True]


def test_bots_blocked_are_shown_by_form():
    cells = [text for tag, _, text in Elements(render()).texts if tag == "td"]

    assert cells[-2:] == ["newsletter", "honeypot 4, too_fast 3"]


# -- escaping ---------------------------------------------------------------------------------


def test_text_from_data_is_escaped():
    evil = "<script>alert(1)</script>"
    data = sequences(warnings=[evil])
    data["steps"][0]["subject"] = evil

    html = render(funnel(source=evil), data, title=evil)

    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert f"{evil} / paid" in [text for tag, _, text in Elements(html).texts if tag == "td"]


# -- login page -------------------------------------------------------------------------------


def test_login_page_posts_the_token_to_the_relative_login_action():
    page = Elements(dashboard.render_login(None))

    forms = [a for t, a in page.tags if t == "form"]
    assert forms == [{"method": "post", "action": "login"}]
    inputs = [a for t, a in page.tags if t == "input"]
    assert [(i["name"], i["type"]) for i in inputs] == [("token", "password")]
    assert "not right" not in dashboard.render_login(None)


def test_login_page_shows_the_error():
    assert ("p", {"class": "error", "role": "alert"}, "That token is not right.") in Elements(
        dashboard.render_login(dashboard.LOGIN_ERROR)
    ).texts


# -- the session ------------------------------------------------------------------------------


class BrokenToken:
    def value(self) -> bytes:
        raise CredentialsUnavailable("SSM is down")


@pytest.fixture
def store(settings: Any) -> Store:
    """The sessions and the sign-in throttle live in the table (moto)."""
    return Store(aws.dynamodb, settings.table_name)


def context(public_url: str = "https://trellis.test/api", token: str = ADMIN_TOKEN, store: Any = None) -> Any:
    """What the session helpers (and page/login/logout) read of a Runtime."""
    return SimpleNamespace(
        signer=TokenSigner(TEST_TOKEN_KEY.encode()),
        admin_token=StaticAdminToken(token.encode()),
        clock=FixedClock(START),
        settings=SimpleNamespace(public_url=public_url),
        store=store,
        campaign=SimpleNamespace(title="Demo campaign", name="demo"),
        reports=SimpleNamespace(
            both=lambda: (FunnelReport.model_validate(funnel()), SequenceReport.model_validate(sequences()))
        ),
        broadcasts=SimpleNamespace(list=lambda: BroadcastList(broadcasts=[])),
    )


def cookie_value(set_cookie: str) -> str:
    name, _, rest = set_cookie.partition("=")
    assert name == dashboard.SESSION_COOKIE
    return rest.split(";")[0]


def test_session_cookie_attributes():
    cookie = dashboard.session_cookie(context(), "s1")

    attributes = [part.strip() for part in cookie.split(";")[1:]]
    assert attributes == ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800", "Secure"]
    assert "Secure" not in dashboard.session_cookie(context(public_url="http://127.0.0.1:8000"), "s1")


def test_fresh_session_is_valid_until_it_expires():
    ctx = context()
    token = cookie_value(dashboard.session_cookie(ctx, "s1"))

    assert dashboard.session_valid(ctx, token)
    ctx.clock.advance(8 * 3600 - 1)
    assert dashboard.session_valid(ctx, token)
    ctx.clock.advance(1)
    assert not dashboard.session_valid(ctx, token)


def test_tampered_session_is_rejected():
    ctx = context()
    token = cookie_value(dashboard.session_cookie(ctx, "s1"))
    body, mac = token.split(".")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")

    assert not dashboard.session_valid(ctx, f"{body}.{flipped}")
    assert not dashboard.session_valid(ctx, "garbage")
    assert not dashboard.session_valid(ctx, "")


def test_session_signed_with_another_key_or_purpose_is_rejected():
    ctx = context()
    claims = {"t": dashboard.token_binding(ADMIN_TOKEN.encode()), "s": "s1"}
    expires = START + timedelta(hours=1)

    other_key = TokenSigner(b"another-key-0123456789abcdef0123456789").sign("admin-session", claims, expires)
    other_purpose = ctx.signer.sign("leads-cursor", claims, expires)
    assert not dashboard.session_valid(ctx, other_key)
    assert not dashboard.session_valid(ctx, other_purpose)
    assert dashboard.session_valid(ctx, ctx.signer.sign("admin-session", claims, expires))


def test_rotating_the_admin_token_ends_sessions():
    ctx = context()
    token = cookie_value(dashboard.session_cookie(ctx, "s1"))

    ctx.admin_token = StaticAdminToken(b"r" * 40)
    assert not dashboard.session_valid(ctx, token)


def test_cookies_are_read_from_the_cookie_header():
    headers = {"cookie": 'theme=dark; trellis_admin=abc.def ; other=1; trellis_admin="ghi.jkl"; trellis_admin='}

    assert dashboard.cookies_from_headers(headers) == ["abc.def", "ghi.jkl"]
    assert dashboard.cookies_from_headers({}) == []
    assert dashboard.cookies_from_headers({"cookie": "not_trellis_admin=x"}) == []


def test_authenticated_by_bearer_or_any_open_session(store):
    ctx = context(store=store)
    good = cookie_value(dashboard.open_session(ctx))

    assert dashboard.authenticated(ctx, {"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert dashboard.authenticated(ctx, {"cookie": f"trellis_admin=stale.value; trellis_admin={good}"})
    assert not dashboard.authenticated(ctx, {"authorization": "Bearer wrong"})
    assert not dashboard.authenticated(ctx, {"authorization": f"Basic {ADMIN_TOKEN}"})
    assert not dashboard.authenticated(ctx, {"cookie": "trellis_admin=stale.value"})
    assert not dashboard.authenticated(ctx, {})
    # Sound and signed, but never opened in the table: no session.
    unopened = cookie_value(dashboard.session_cookie(ctx, "never-opened"))
    assert not dashboard.authenticated(ctx, {"cookie": f"trellis_admin={unopened}"})


def test_an_empty_admin_token_matches_nothing(store):
    ctx = context(token="", store=store)

    assert not dashboard.authenticated(ctx, {"authorization": "Bearer "})
    assert dashboard.login(ctx, request(body=b"token=")).status_code == 401


def test_unreadable_admin_token_lets_nobody_in():
    ctx = context()
    good = cookie_value(dashboard.session_cookie(ctx, "s1"))
    ctx.admin_token = BrokenToken()

    with pytest.raises(CredentialsUnavailable):
        dashboard.authenticated(ctx, {"cookie": f"trellis_admin={good}"})


# -- the HTTP functions, with stand-ins ---------------------------------------------------------


def request(headers=None, body: bytes = b"") -> Any:
    """A login form post by default (Chalice lower-cases header names)."""
    return SimpleNamespace(
        headers={"content-type": "application/x-www-form-urlencoded", **(headers or {})}, raw_body=body, context={}
    )


def test_page_without_credentials_is_the_login_form():
    response = dashboard.page(context(), request())

    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["Cache-Control"].startswith("no-store")
    assert 'action="login"' in response.body


def test_login_then_page_then_logout(store):
    ctx = context(store=store)

    login = dashboard.login(ctx, request(body=f"token={ADMIN_TOKEN}".encode()))
    assert (login.status_code, login.headers["Location"]) == (303, "dashboard")
    assert login.headers["Cache-Control"].startswith("no-store")

    token = cookie_value(login.headers["Set-Cookie"])
    page = dashboard.page(ctx, request({"cookie": f"trellis_admin={token}"}))
    assert page.status_code == 200
    assert "<svg" in page.body and "Demo campaign" in page.body
    assert page.headers["Cache-Control"].startswith("no-store")

    logout = dashboard.logout(ctx, request({"cookie": f"trellis_admin={token}"}))
    assert (logout.status_code, logout.headers["Location"]) == (303, "dashboard")
    assert logout.headers["Set-Cookie"].startswith("trellis_admin=;")
    assert "Max-Age=0" in logout.headers["Set-Cookie"]


@pytest.mark.parametrize(
    "body",
    [b"token=wrong", b"", b"other=1", b"token=", b"token=" + b"x" * 20_000, b"token=%ff%fe", b"&".join([b"a=1"] * 50)],
)
def test_wrong_or_missing_token_is_refused_without_detail(body, store):
    response = dashboard.login(context(store=store), request(body=body))

    assert response.status_code == 401
    assert "Set-Cookie" not in response.headers
    assert "That token is not right." in response.body


def test_credentials_unavailable_is_503_for_page_and_login(store):
    ctx = context(store=store)
    ctx.admin_token = BrokenToken()

    page = dashboard.page(ctx, request({"authorization": f"Bearer {ADMIN_TOKEN}"}))
    login = dashboard.login(ctx, request(body=f"token={ADMIN_TOKEN}".encode()))

    assert (page.status_code, login.status_code) == (503, 503)
    assert "Set-Cookie" not in login.headers
    assert "<svg" not in page.body


def test_bearer_header_opens_the_page_without_a_cookie(store):
    response = dashboard.page(context(store=store), request({"authorization": f"Bearer {ADMIN_TOKEN}"}))

    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers


def test_sample_data_is_not_mutated_by_rendering():
    data, steps = funnel(), sequences(["w"])
    before = copy.deepcopy((data, steps))
    render(data, steps)
    assert (data, steps) == before


def test_broadcasts_are_listed_with_their_report():
    variant = {
        "variant_id": "b",
        "subject": "Faster handoffs",
        "template": "email/broadcast.html",
        "sent": 200,
        "delivered": 198,
        "human_opens": 50,
        "human_clicks": 10,
        "machine_opens": 70,
        "machine_clicks": 5,
        "unsubscribes": 1,
        "bounces": 2,
        "complaints": 0,
    }
    listed = BroadcastList.model_validate(
        {
            "broadcasts": [
                {
                    "broadcast_id": "20261123T093000-abcdef",
                    "name": "December <issue>",
                    "topic": "newsletter",
                    "segment": {"name": "newsletter-readers"},
                    "status": "sent",
                    "send_at": "2026-11-23T09:30:00.000000Z",
                    "created_at": "2026-11-23T09:00:00.000000Z",
                    "recipients": 230,
                    "sent": 200,
                    "skipped": {"topic_off": 20, "paused": 10},
                    "variants": [variant],
                    "winner": "b",
                }
            ]
        }
    )
    page = dashboard.render_dashboard(
        FunnelReport.model_validate(funnel()),
        SequenceReport.model_validate(sequences()),
        campaign_title="Demo",
        now=START,
        broadcasts=listed,
    )
    cells = [text for tag, attrs, text in Elements(page).texts if tag == "td"]
    row = cells[cells.index("December <issue>") :][:10]  # escaped in the HTML, read back as text
    assert row == [
        "December <issue>",
        "newsletter",
        "sent",
        "2026-11-23 09:30",
        "230",
        "200",
        "30",
        "25.0%",
        "5.0%",
        "b",
    ]
    assert "December <issue>" not in page  # autoescaped

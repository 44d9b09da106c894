"""End to end: `python -m twin.run` (what `make demo` runs) serves a form post into moto, and
Ctrl-C stops all of it. Runs the real processes on free ports, so it takes a few seconds."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from chalicelib.config import load_campaign
from chalicelib.entities import lead_id_for
from chalicelib.models import normalise_email
from tests.twin_process import OPENER, ROOT, STOP_TIMEOUT, TwinProcess, port_is_free, running_twin

ASSET = ROOT / "twin" / "assets" / "lead-nurture-playbook.pdf"


@pytest.fixture
def twin(tmp_path: Path) -> Iterator[TwinProcess]:
    with running_twin(tmp_path) as running:
        yield running


def _post_form(api_port: int, form_id: str, fields: dict[str, str]) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{api_port}/forms/{form_id}",
        data=urllib.parse.urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    try:
        with OPENER.open(request, timeout=15) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as e:  # urllib raises for the 3xx it was told not to follow
        return e.code, dict(e.headers)


def _moto_client(service: str, port: int) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_demo_captures_a_form_post_into_moto_and_stops_on_ctrl_c(twin: TwinProcess) -> None:
    process, moto_port, api_port, console_port = twin.process, twin.moto_port, twin.api_port, twin.console_port
    twin.wait_for_health()
    campaign = load_campaign("demo")

    status, headers = _post_form(
        api_port, "newsletter", {"email": " Ada.Lovelace@Example.COM ", "first_name": "Ada", "consent": "on"}
    )

    assert status == 303, twin.output()
    # The twin serves the demo campaign with its landing-page URLs on the console's actual port.
    assert campaign.forms["newsletter"].thank_you_url == "http://127.0.0.1:8001/thanks.html"
    assert headers["Location"] == f"http://127.0.0.1:{console_port}/thanks.html"
    lead_id = lead_id_for(normalise_email("Ada.Lovelace@Example.COM").identity)
    item = _moto_client("dynamodb", moto_port).get_item(
        TableName="trellis-dev-leads",
        Key={"pk": {"S": f"LEAD#{lead_id}"}, "sk": {"S": "PROFILE"}},
        ConsistentRead=True,
    )["Item"]
    assert item["email"] == {"S": "Ada.Lovelace@example.com"}
    assert item["first_name"] == {"S": "Ada"}
    consent = item["consent"]["M"]
    assert consent["status"] == {"S": "granted"}
    form_consent = campaign.forms["newsletter"].consent
    assert form_consent is not None
    assert consent["version"] == {"S": form_consent.version}
    assert consent["form_id"] == {"S": "newsletter"}
    # The magnet's file was uploaded where the ebook form's download links point.
    asset_key = campaign.magnets["ebook"].asset_key
    buckets = _moto_client("cloudformation", moto_port).describe_stacks(StackName="trellis-dev")["Stacks"][0]["Outputs"]
    bucket = next(o["OutputValue"] for o in buckets if o["OutputKey"] == "AssetsBucketName")
    body = _moto_client("s3", moto_port).get_object(Bucket=bucket, Key=asset_key)["Body"].read()
    assert body == ASSET.read_bytes()

    # The twin runs what chalice local does not: the stream pump scores the submission and the
    # dispatcher tick sends the welcome (an immediate step), as Lambda and EventBridge would.
    dynamodb = _moto_client("dynamodb", moto_port)
    deadline = time.monotonic() + 30
    messages: list[Any] = []
    while time.monotonic() < deadline and not messages:
        messages = dynamodb.query(
            TableName="trellis-dev-leads",
            KeyConditionExpression="pk = :pk AND begins_with(sk, :msg)",
            ExpressionAttributeValues={":pk": {"S": f"LEAD#{lead_id}"}, ":msg": {"S": "MSG#"}},
            ConsistentRead=True,
        )["Items"]
        time.sleep(0.5)
    assert [m["message_id"]["S"] for m in messages] == ["welcome.welcome"], twin.output()
    scored = dynamodb.get_item(
        TableName="trellis-dev-leads", Key={"pk": {"S": f"LEAD#{lead_id}"}, "sk": {"S": "PROFILE"}}, ConsistentRead=True
    )["Item"]
    assert scored["score_events"] == {"N": "1"}  # the form_submitted event went through the stream handler
    # ... and the dev console shows it in the outbox.
    with OPENER.open(f"http://127.0.0.1:{console_port}/outbox.json", timeout=5) as response:
        outbox = json.loads(response.read())
    assert [m["subject"] for m in outbox] == ["Welcome to the Trellis newsletter, Ada"]
    with OPENER.open(f"http://127.0.0.1:{console_port}/leads.json", timeout=5) as response:
        leads = json.loads(response.read())
    assert [(lead["email"], lead["stage"], lead["score"]) for lead in leads] == [
        ("Ada.Lovelace@example.com", "subscriber", 5)
    ]

    process.send_signal(signal.SIGINT)

    assert process.wait(STOP_TIMEOUT) == 0, twin.output()
    assert port_is_free(api_port), "the API (chalice local) outlived the twin"
    assert port_is_free(moto_port)
    assert port_is_free(console_port)


def test_demo_asset_is_a_well_formed_pdf() -> None:
    # Hand-written bytes: check the cross-reference offsets a PDF reader relies on.
    data = ASSET.read_bytes()
    assert data.startswith(b"%PDF-1.")
    assert data.rstrip().endswith(b"%%EOF")
    startxref = int(data.rsplit(b"startxref", 1)[1].split()[0])
    assert data[startxref:].startswith(b"xref")
    lines = data[startxref:].split(b"\n")
    count = int(lines[1].split()[1])
    for number, entry in enumerate(lines[2 : 2 + count]):
        offset, _, kind = entry.split()
        if kind == b"n":
            assert data[int(offset) :].startswith(b"%d 0 obj" % number)

"""The dispatcher's delivery guarantees under concurrency, crashes, SES errors, time and rate limits.

Every email at most once, with the one documented window (SES accepted, the Lambda died before
the commit: sent again after the lease); nothing lost; nothing to a suppressed address.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, Optional

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from chalicelib import aws
from chalicelib.entities import Event, Suppression, iso, lead_id_for
from chalicelib.errors import StoreError
from chalicelib.nurture.dispatcher import BACKOFF_MAX, LEASE, Dispatcher, Pacer, TickReport, backoff, send_workers
from chalicelib.nurture.render import Renderer
from chalicelib.store import DUE_SHARDS, due_shard
from testkit import items
from tests.conftest import START, FakeSleep, LambdaContext
from tests.helpers import post_json
from twin.pump import scheduled_event

FOREVER = 60_000  # ms left of the invocation: plenty


class LambdaKilled(BaseException):
    """The function dying mid-way (a timeout, out of memory): no handler catches it, as none can
    catch the real thing. A plain ``Exception`` is an item's error, which the tick contains."""


# -- moto, faster but the same ---------------------------------------------------------------


@pytest.fixture(autouse=True)
def _one_table_snapshot_per_transaction(monkeypatch):
    """moto deep-copies a table before a transaction, to roll a failed one back -- once per
    operation, though all the copies are taken before the first operation runs and so are the
    same. Take one per table per transaction: the same rollback, a third of the copying (most of
    these tests' run time)."""
    import moto.dynamodb.models as models
    from moto.dynamodb.models.table import Table

    snapshots = threading.local()

    class SnapshotOnce:
        def deepcopy(self, value: Any, memo: Any = None) -> Any:
            taken = getattr(snapshots, "taken", None)
            if taken is None or not isinstance(value, Table):
                return copy.deepcopy(value, memo)
            if id(value) not in taken:
                taken[id(value)] = copy.deepcopy(value)
            return taken[id(value)]

    transact = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: Any) -> Any:
        snapshots.taken = {}
        try:
            return transact(self, transact_items)
        finally:
            snapshots.taken = None

    monkeypatch.setattr(models, "copy", SnapshotOnce())
    monkeypatch.setattr(models.DynamoDBBackend, "transact_write_items", transact_write_items)


# -- helpers ----------------------------------------------------------------------------------


def sign_up(client: Any, count: int, prefix: str = "lead") -> list[str]:
    """``count`` newsletter signups; each leaves the welcome step due now (no tick, no stream)."""
    emails = [f"{prefix}{i}@example.com" for i in range(count)]
    for email in emails:
        assert post_json(client, "/forms/newsletter", {"email": email, "consent": True}).status_code == 200
    return emails


def recipients(outbox: Any) -> Counter[str]:
    return Counter(str(m["To"]) for m in outbox())


def message_items(table_items: Any) -> list[dict[str, Any]]:
    return items.messages(table_items())


def ses_error(code: str) -> ClientError:
    """What botocore raises when SES answers with this error code."""
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "SendEmail"
    )


class Ses:
    """The SES client's send_email, scripted: records each call's recipient, and raises what
    ``fail(call_number, recipient)`` returns (None: the real moto send)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, clock: Optional[Callable[[], float]] = None) -> None:
        self.client = aws.sesv2()  # the cached client the SesMailer sends with
        self.real_send = self.client.send_email
        self._clock = clock
        self.calls: list[str] = []
        self.times: list[float] = []
        self.fail: Callable[[int, str], Optional[BaseException]] = lambda number, to: None
        monkeypatch.setattr(self.client, "send_email", self._send_email)

    def _send_email(self, **kwargs: Any) -> Any:
        to = kwargs["Destination"]["ToAddresses"][0]
        self.calls.append(to)
        if self._clock is not None:
            self.times.append(self._clock())
        error = self.fail(len(self.calls), to)
        if error is not None:
            raise error
        return self.real_send(**kwargs)


def new_dispatcher(rt: Any, rate: float = 14.0, sleep: Optional[FakeSleep] = None, store: Any = None) -> Dispatcher:
    """Another dispatcher on the same table, built as runtime.py builds one (another Lambda)."""
    sleep = sleep or FakeSleep()
    return Dispatcher(
        rt.campaign,
        store or rt.store,
        rt.mailer,
        Renderer(rt.campaign, rt.links),
        rt.links,
        rt.assets,
        rt.clock,
        Pacer(rate, monotonic=sleep.monotonic, sleep=sleep.sleep),
        on_due_handoff=rt.notifier.notify,
    )


# -- two (or three) dispatchers at the same moment --------------------------------------------


class _RendezvousStore:
    """The shared store, except that each dispatcher waits, holding the first page of due work it
    read, until every dispatcher holds it: all of them then race for the same enrolments."""

    def __init__(self, store: Any, barrier: threading.Barrier) -> None:
        self._store = store
        self._barrier = barrier

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def due_enrolments(self, now: str, page_size: int = 50, shards: Any = None) -> Iterator[Any]:
        for i, enrolment in enumerate(self._store.due_enrolments(now, page_size, shards)):
            if i == 0:
                self._barrier.wait(timeout=30)
            yield enrolment


def ticks_at_once(rt: Any, dispatchers: int) -> list[TickReport]:
    """``dispatchers`` dispatchers on the same table, started together, each holding the first
    page of due work it read until all of them hold it; their reports."""
    start, holding = threading.Barrier(dispatchers), threading.Barrier(dispatchers)
    store = _RendezvousStore(rt.store, holding)
    workers = [new_dispatcher(rt, store=store) for _ in range(dispatchers)]
    reports: list[TickReport] = []
    errors: list[BaseException] = []

    def run(dispatcher: Dispatcher) -> None:
        try:
            start.wait(timeout=30)
            reports.append(dispatcher.tick(lambda: FOREVER))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(d,)) for d in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return reports


@pytest.mark.parametrize("dispatchers", [2, 3])
def test_dispatchers_ticking_at_once_send_each_step_exactly_once(
    enrolment, client, rt, outbox, table_items, dispatchers
):
    emails = sign_up(client, 40)
    reports = ticks_at_once(rt, dispatchers)
    assert len(reports) == dispatchers

    assert recipients(outbox) == Counter(emails)  # 40 emails, each address once
    assert len(message_items(table_items)) == 40
    assert sum(r.sent for r in reports) == 40
    assert all(r.claimed == r.sent for r in reports)  # every won claim was sent, once
    # Every dispatcher read the same first page before anyone claimed: each of its enrolments was
    # won by one dispatcher and lost by all the others.
    shards = Counter(due_shard(lead_id_for(e)) for e in emails)
    first_page = min(50, next(shards[f"DUE#{s}"] for s in range(DUE_SHARDS) if shards[f"DUE#{s}"]))
    assert sum(r.lost_claims for r in reports) >= (dispatchers - 1) * first_page
    # Nothing left claimed or due today.
    for email in emails:
        state = enrolment(email)
        assert "claim_id" not in state
        assert state["step_index"] == 1
        assert state["due_at"] == iso(START + timedelta(days=2))


# -- crashes ----------------------------------------------------------------------------------


def test_crash_after_claim_before_send_leaves_the_step_due_at_lease_end_and_sends_it_once(
    enrolment, client, rt, clock, tick, outbox, table_items, monkeypatch
):
    emails = sign_up(client, 5)
    victim = emails[2]
    ses = Ses(monkeypatch)
    ses.fail = lambda number, to: LambdaKilled() if to == victim else None

    with pytest.raises(LambdaKilled):  # a crash escapes the handler
        tick()

    claimed = enrolment(victim)
    assert claimed["due_at"] == iso(START + LEASE)  # the claim moved due_at to the lease's end
    assert claimed["claim_id"]
    assert claimed["attempts"] == 1
    assert claimed["status"] == "active" and claimed["step_index"] == 0
    assert victim not in recipients(outbox)
    assert not [m for m in message_items(table_items) if m["lead_id"] == lead_id_for(victim)]

    ses.fail = lambda number, to: None  # the next Lambda is healthy
    tick()  # same moment: the others go, the victim's lease still runs
    clock.advance(LEASE.total_seconds() - 1)
    tick()
    assert victim not in recipients(outbox)
    assert recipients(outbox) == Counter(e for e in emails if e != victim)

    clock.advance(2)  # the lease is over
    report = tick()
    assert report["sent"] == 1
    assert recipients(outbox) == Counter(emails)  # the victim too, exactly once
    done = enrolment(victim)
    assert done["step_index"] == 1 and "claim_id" not in done and done["attempts"] == 0


@pytest.mark.parametrize(
    "failure",
    [StoreError("transaction failed: DynamoDB unreachable"), LambdaKilled()],
    ids=["commit-fails", "lambda-dies"],
)
def test_the_one_window_sent_but_not_committed_is_sent_again_after_the_lease_and_never_lost(
    enrolment, client, rt, clock, tick, outbox, table_items, monkeypatch, failure
):
    """The documented window: SES accepted the email, then the commit never happened. The step
    falls due again when the lease ends and is sent a second time -- twice, never zero times."""
    [email] = sign_up(client, 1)
    commit_send = rt.store.commit_send
    failures = [failure]

    def commit_once_fails(*args: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        commit_send(*args, **kwargs)

    monkeypatch.setattr(rt.store, "commit_send", commit_once_fails)

    if isinstance(failure, StoreError):
        report = tick()  # contained: logged, counted, the tick goes on
        assert report["failed"] == 1 and report["sent"] == 0
    else:
        with pytest.raises(LambdaKilled):
            tick()
    assert recipients(outbox) == Counter({email: 1})
    assert message_items(table_items) == []  # not recorded
    assert enrolment(email)["due_at"] == iso(START + LEASE)

    clock.advance(LEASE.total_seconds() - 1)
    tick()
    assert recipients(outbox) == Counter({email: 1})

    clock.advance(2)
    assert tick()["sent"] == 1
    assert recipients(outbox) == Counter({email: 2})  # the window: exactly one extra copy
    [message] = message_items(table_items)
    assert message["message_id"] == "welcome.welcome"
    [profile] = items.profiles(table_items(), lead_id_for(email))
    assert profile["emails_sent"] == 1  # only the committed send is counted
    clock.advance(LEASE.total_seconds() * 3)
    tick()
    assert recipients(outbox) == Counter({email: 2})


def test_the_window_also_opens_when_ses_accepts_but_its_answer_is_lost(
    client, rt, clock, tick, outbox, table_items, monkeypatch
):
    """A timeout after SES accepted is the same window reached another way: we cannot know the
    email went, so it is retried after the backoff -- and sent twice. Never lost."""
    [email] = sign_up(client, 1)
    ses = Ses(monkeypatch)
    send = ses.real_send

    def accepted_then_timed_out(**kwargs: Any) -> Any:
        response = send(**kwargs)
        if len(ses.calls) == 1:
            raise ReadTimeoutError(endpoint_url="https://email.us-east-1.amazonaws.com")
        return response

    ses.real_send = accepted_then_timed_out

    assert tick()["failed"] == 1
    assert recipients(outbox) == Counter({email: 1})
    assert message_items(table_items) == []
    clock.advance(30)  # backoff(1)
    assert tick()["sent"] == 1
    assert recipients(outbox) == Counter({email: 2})
    assert len(message_items(table_items)) == 1


def test_a_retried_tick_at_the_same_moment_sends_nothing_twice(client, rt, tick, outbox, table_items):
    emails = sign_up(client, 10)

    first = tick()
    again = tick()  # EventBridge delivers at least once

    assert first["sent"] == 10
    assert again["claimed"] == 0 and again["sent"] == 0
    assert recipients(outbox) == Counter(emails)
    assert len(message_items(table_items)) == 10


def test_a_redelivered_stream_batch_and_a_tick_send_each_immediate_step_once(client, rt, stream, tick, outbox):
    from app import on_lead_change
    from twin.pump import batches

    emails = sign_up(client, 5)
    records = stream.read()
    for _ in range(2):  # Lambda retries a batch after a timeout: same records again
        for batch in batches(records):
            on_lead_change({"Records": batch}, LambdaContext())
    tick()

    assert recipients(outbox) == Counter(emails)


# -- SES errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["Throttling", "TooManyRequestsException", "MaxSendingRateExceeded"])
def test_ses_throttling_stops_the_tick_backs_off_that_step_and_slows_the_pacer(
    enrolment, client, rt, clock, tick, outbox, table_items, monkeypatch, fake_sleep, code
):
    emails = sign_up(client, 10)
    ses = Ses(monkeypatch)
    ses.fail = lambda number, to: ses_error(code) if number == 4 else None
    rate = rt.dispatcher.pacer.rate

    report = tick()

    # The throttle stops new work; what was in flight with it (the other send workers') finishes.
    workers = send_workers(rate)
    assert workers > 1  # so this also shows concurrent sends stopping
    assert report["throttled"] == 1 and report["stopped_early"] is True
    assert report["claimed"] == report["sent"] + 1
    assert 4 <= report["claimed"] <= 3 + workers  # nothing taken after the throttle came back
    throttled = ses.calls[3]
    sent = [e for e in ses.calls if e != throttled]
    assert len(sent) == report["sent"] and recipients(outbox) == Counter(sent)
    backed_off = enrolment(throttled)
    assert backed_off["due_at"] == iso(START + timedelta(seconds=30))  # backoff(1)
    assert backed_off["attempts"] == 1
    assert "claim_id" not in backed_off
    untouched = [e for e in emails if e not in ses.calls]
    assert len(untouched) == 10 - report["claimed"]
    for email in untouched:  # never claimed: as the form left them
        item = enrolment(email)
        assert item["due_at"] == iso(START) and "claim_id" not in item and item.get("attempts", 0) == 0
    assert rt.dispatcher.pacer.rate == rate / 2

    ses.fail = lambda number, to: None
    report = tick()  # same moment: the untouched go, the throttled one waits
    assert report["sent"] == len(untouched)
    assert recipients(outbox) == Counter(sent + untouched)
    assert fake_sleep.sleeps[-1] == pytest.approx(2 / rate)  # spaced at the halved rate

    clock.advance(31)
    assert tick()["sent"] == 1
    assert recipients(outbox) == Counter(emails)  # all ten, each once


def test_message_rejected_suppresses_that_lead_and_exits_it_for_good(
    enrolment, client, rt, clock, tick, outbox, table_items, monkeypatch
):
    emails = sign_up(client, 5)
    rejected = emails[1]
    ses = Ses(monkeypatch)
    ses.fail = lambda number, to: ses_error("MessageRejected") if to == rejected else None

    report = tick()

    assert report["rejected"] == 1 and report["sent"] == 4 and report["stopped_early"] is False
    lead_id = lead_id_for(rejected)
    [suppression] = [i for i in table_items() if i["pk"] == f"SUPPRESS#{lead_id}"]
    assert suppression["reason"] == "rejected"
    assert suppression["detail"] == "MessageRejected"
    exited = enrolment(rejected)
    assert exited["status"] == "exited" and exited["exit_reason"] == "rejected"
    assert not {"due_at", "due_shard", "claim_id"} & exited.keys()
    assert not [m for m in message_items(table_items) if m["lead_id"] == lead_id]
    assert recipients(outbox) == Counter(e for e in emails if e != rejected)

    ses.fail = lambda number, to: None
    clock.advance(timedelta(days=2, minutes=1).total_seconds())  # the second step is due
    assert tick()["sent"] == 4
    assert ses.calls.count(rejected) == 1  # never tried again
    assert rejected not in recipients(outbox)


@pytest.mark.parametrize("code", ["MailFromDomainNotVerifiedException", "MailFromDomainNotVerified"])
def test_a_sender_side_rejection_suppresses_no_lead(enrolment, client, rt, tick, table_items, monkeypatch, code):
    """Our MAIL FROM domain not being verified says nothing about the recipient: no lead may be
    suppressed for it, or one misconfiguration would unsubscribe the whole list for good."""
    emails = sign_up(client, 3)
    ses = Ses(monkeypatch)
    ses.fail = lambda number, to: ses_error(code)

    tick()

    assert [i for i in table_items() if i["pk"].startswith("SUPPRESS#")] == []
    for email in emails:
        state = enrolment(email)
        assert state["status"] == "active" and "due_at" in state  # tried again later


@pytest.mark.parametrize(
    "error",
    [
        ses_error("InternalFailure"),
        EndpointConnectionError(endpoint_url="https://email.us-east-1.amazonaws.com"),
    ],
    ids=["InternalFailure", "EndpointConnectionError"],
)
def test_a_transient_send_failure_is_retried_with_growing_backoff_and_sent_once(
    enrolment, client, rt, clock, tick, outbox, table_items, monkeypatch, error
):
    emails = sign_up(client, 3)
    unlucky = emails[0]
    ses = Ses(monkeypatch)
    ses.fail = lambda number, to: error if to == unlucky and ses.calls.count(unlucky) <= 3 else None
    rate = rt.dispatcher.pacer.rate

    report = tick()
    assert report["failed"] == 1 and report["sent"] == 2 and report["stopped_early"] is False
    waited = timedelta(0)
    for attempt, delay in enumerate([30, 60, 120], start=1):
        state = enrolment(unlucky)
        assert state["attempts"] == attempt and "claim_id" not in state
        assert state["due_at"] == iso(START + waited + timedelta(seconds=delay))
        clock.advance(delay - 1)
        assert tick()["claimed"] == 0  # not before its backoff
        clock.advance(1)
        waited += timedelta(seconds=delay)
        report = tick()
        assert report["claimed"] == 1
        assert report["sent"] == (1 if attempt == 3 else 0)

    assert ses.calls.count(unlucky) == 4
    assert recipients(outbox) == Counter(emails)  # each once
    done = enrolment(unlucky)
    assert done["attempts"] == 0 and done["step_index"] == 1
    assert rt.dispatcher.pacer.rate == rate  # a failure is not a reason to slow down


def test_backoff_doubles_from_30_seconds_up_to_6_hours():
    assert [backoff(n) for n in range(1, 6)] == [timedelta(seconds=s) for s in (30, 60, 120, 240, 480)]
    assert backoff(0) == timedelta(seconds=30)
    assert backoff(11) == BACKOFF_MAX == backoff(40) == timedelta(hours=6)


# -- time budget and pacing -------------------------------------------------------------------


class DrainingContext(LambdaContext):
    """Lambda's context, its remaining time dropping a second each time the dispatcher asks."""

    def get_remaining_time_in_millis(self) -> int:
        remaining = self.remaining_ms
        self.remaining_ms -= 1_000
        return remaining


def test_tick_stops_taking_work_before_the_lambda_times_out(enrolment, client, rt, tick, outbox, table_items):
    from app import dispatch

    emails = sign_up(client, 20)

    # 14 s, 13 s, 12 s, 11 s, 10 s: five sends; then 9 s is inside the 10 s safety margin.
    report = dispatch(scheduled_event(), DrainingContext(14_000))

    assert report["sent"] == 5 and report["claimed"] == 5 and report["stopped_early"] is True
    assert len(outbox()) == 5
    left = [e for e in emails if e not in recipients(outbox)]
    assert len(left) == 15
    for email in left:
        item = enrolment(email)
        assert item["due_at"] == iso(START) and "claim_id" not in item

    assert tick()["sent"] == 15
    assert recipients(outbox) == Counter(emails)


def test_pacer_spaces_sends_at_the_send_rate(client, rt, monkeypatch):
    sign_up(client, 10)
    sleep = FakeSleep()
    ses = Ses(monkeypatch, clock=sleep.monotonic)
    dispatcher = new_dispatcher(rt, rate=2.0, sleep=sleep)

    assert dispatcher.tick(lambda: FOREVER).sent == 10

    assert sleep.sleeps == pytest.approx([0.5] * 9)
    assert sum(sleep.sleeps) == pytest.approx(4.5)
    gaps = [b - a for a, b in zip(ses.times, ses.times[1:], strict=False)]
    assert len(gaps) == 9 and min(gaps) >= 0.5 - 1e-9


# -- never to a suppressed or unsubscribed address --------------------------------------------


def test_no_email_to_a_suppressed_or_unsubscribed_address(enrolment, client, rt, clock, tick, outbox, table_items):
    complained, unsubscribed, half_unsubscribed, fine = sign_up(client, 4)
    now = clock.now()
    rt.store.suppress(Suppression(lead_id_for(complained), "complained", iso(now), "abuse"))
    # The unsubscribe route, as the recipient's click runs it.
    link = rt.links.unsubscribe(lead_id_for(unsubscribed), "welcome.welcome", now)
    rt.tracker.unsubscribe(link.rsplit("/", 1)[1])
    # Only the profile marked (as if the suppression write were lost): still no email.
    rt.store.record_event(
        Event(lead_id_for(half_unsubscribed), "e1", "unsubscribed", iso(now)),
        profile_sets={"unsubscribed_at": iso(now)},
    )

    report = tick()

    assert report["sent"] == 1 and report["exited"] == 3
    assert report["exits"] == {"suppressed:complained": 1, "suppressed:unsubscribed": 1, "unsubscribed": 1}
    for email in (complained, unsubscribed, half_unsubscribed):
        item = enrolment(email)
        assert item["status"] == "exited" and "due_at" not in item and "due_shard" not in item

    clock.advance(timedelta(days=7).total_seconds())  # every later step of the sequence
    tick()
    assert set(recipients(outbox)) == {fine}


# -- a lead that expired unconfirmed and signs up again ---------------------------------------


def _expire_by_ttl(settings: Any, now: Any) -> None:
    """What DynamoDB's TTL does: delete every item whose ``expires_at`` has passed."""
    import boto3

    table = boto3.resource("dynamodb").Table(settings.table_name)
    for item in table.scan(ConsistentRead=True)["Items"]:
        if "expires_at" in item and int(item["expires_at"]) <= now.timestamp():
            table.delete_item(Key={"pk": item["pk"], "sk": item["sk"]})


def test_a_lead_that_expired_unconfirmed_and_signs_up_again_gets_one_confirmation_not_one_per_lease(
    client, rt, clock, tick, outbox, settings, monkeypatch
):
    """An unconfirmed lead's items expire by TTL, but the record of its confirmation email (the
    MSG item, written without ``expires_at``) stays. When the person signs up again, the new
    confirmation's commit finds that record, fails, and is taken for the window: the email must
    not then go out again at every lease's end."""
    form = rt.campaign.forms["newsletter"].model_copy(update={"double_opt_in": True})
    monkeypatch.setitem(rt.campaign.forms, "newsletter", form)
    [email] = sign_up(client, 1)
    tick()  # the confirmation email; never clicked
    clock.advance(timedelta(days=8).total_seconds())
    _expire_by_ttl(settings, clock.now())

    sign_up(client, 1)  # the same person, again
    tick()
    for _ in range(3):
        clock.advance(LEASE.total_seconds() + 1)
        tick()

    assert recipients(outbox) == Counter({email: 2})  # one confirmation per signup


# -- concurrent sends within one tick -----------------------------------------------------------


def test_send_workers_follow_the_send_rate():
    assert [send_workers(rate) for rate in (0.5, 1, 14, 50, 1_000)] == [1, 1, 3, 8, 8]


def test_a_tick_keeps_several_sends_in_flight_and_never_more_than_its_workers(client, rt, outbox, monkeypatch):
    emails = sign_up(client, 24)
    ses = Ses(monkeypatch)
    in_flight, most = 0, 0
    lock = threading.Lock()
    # Every send waits at SES until a second one is there too: sends one at a time would never
    # meet, and the barrier's timeout would break the tick.
    pairs = threading.Barrier(2, timeout=10)
    real_send = ses.real_send

    def send_in_pairs(**kwargs: Any) -> Any:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        try:
            pairs.wait()
            return real_send(**kwargs)
        finally:
            with lock:
                in_flight -= 1

    ses.real_send = send_in_pairs
    dispatcher = new_dispatcher(rt, rate=1_000.0)  # the pacer never holds anyone back

    report = dispatcher.tick(lambda: FOREVER)

    assert report.sent == report.claimed == 24
    assert recipients(outbox) == Counter(emails)
    assert not pairs.broken
    assert 2 <= most <= send_workers(1_000.0)


def test_one_leads_enrolments_run_one_after_another_in_order():
    from chalicelib.nurture.dispatcher import _TickRun

    run = _TickRun(workers=4, pacer=Pacer(14.0))
    events: list[tuple[str, str, str]] = []
    lock = threading.Lock()

    def dispatch(item: Any, report: TickReport) -> bool:
        with lock:
            events.append(("start", item.lead_id, item.sequence_id))
        time.sleep(0.02)
        with lock:
            events.append(("end", item.lead_id, item.sequence_id))
        report.sent += 1
        return True

    items = [SimpleNamespace(lead_id=lead, sequence_id=str(n)) for n, lead in enumerate("abacabca")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for item in items:
            run.free_slot()
            run.submit(pool, item.lead_id, dispatch, item)  # type: ignore[arg-type]
    report = run.merged_into(TickReport())

    assert report.sent == 8
    for lead in "abc":
        own = [(kind, n) for kind, who, n in events if who == lead]
        sequence = [n for kind, n in own if kind == "start"]
        assert sequence == sorted(sequence, key=int)  # in the order they were due
        # never two of one lead at once: each start follows the previous end
        assert [kind for kind, _ in own] == ["start", "end"] * len(sequence)
    assert max(_overlap(events)) > 1  # while different leads did overlap


def _overlap(events: list[tuple[str, str, str]]) -> list[int]:
    level, levels = 0, []
    for kind, _, _ in events:
        level += 1 if kind == "start" else -1
        levels.append(level)
    return levels


def test_the_pacer_hands_out_slots_one_at_a_time_to_many_threads():
    sleep = FakeSleep()
    pacer = Pacer(4.0, monotonic=sleep.monotonic, sleep=sleep.sleep)
    threads = [threading.Thread(target=pacer.wait) for _ in range(9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    # Nine slots a quarter second apart: the first free, then eight waits of exactly 0.25 s.
    assert sleep.sleeps == pytest.approx([0.25] * 8)
    assert sleep.now == pytest.approx(2.0)

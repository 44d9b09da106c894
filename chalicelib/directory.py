"""The team's view of leads: the filtered list with its signed cursor, the CSV export in pages,
and a lead's detail with the verdict on each open and click. Answers are ``chalicelib.http.bodies``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Optional

from chalicelib.clock import Clock
from chalicelib.engagement import HUMAN, MACHINE
from chalicelib.entities import Lead, iso
from chalicelib.errors import InvalidToken, NotFound, ValidationFailed
from chalicelib.store import LeadQuery, LeadRecord, Store
from chalicelib.tracking import TokenSigner, engagement_verdicts
from chalicelib.vocabulary import EventType

if TYPE_CHECKING:
    from collections.abc import Iterator

    from chalicelib.campaign_types import Campaign, EngagementRules, Segment
    from chalicelib.http.bodies import LeadDetail, LeadList, LeadSummary, SegmentCount
    from chalicelib.models import LeadListParams

LEADS_CURSOR = "leads-cursor"
CURSOR_LIFETIME = timedelta(days=1)
# Well under Lambda's 6 MB response limit, JSON envelope and escaping included.
CSV_PAGE_BYTES = 4 * 1024 * 1024

# What the lead detail counts of a lead's engagement with its emails, people's and machines' apart.
_ENGAGEMENT_COUNTED = {EventType.EMAIL_OPENED: "opened", EventType.EMAIL_CLICKED: "clicked"}


@dataclass(frozen=True)
class LeadPage:
    query: LeadQuery
    filters: str  # a digest of the query: a cursor is only good for the filters it came from
    leads: list[Lead]
    next_key: Optional[dict[str, Any]]


@dataclass(frozen=True)
class CsvPage:
    text: str
    next_cursor: Optional[str]


@dataclass(frozen=True)
class Directory:
    campaign: Campaign
    store: Store
    signer: TokenSigner
    clock: Clock

    def segment_members(self, segment: Segment, read: Optional[list[int]] = None) -> Iterator[Lead]:
        """The segment's leads now, read from the index that narrows it most (never a Scan).
        ``read``, when given, counts the profiles read."""
        from chalicelib.segments import matches, plan

        now = self.clock.now()
        for lead in self.store.segment_candidates(plan(segment)):
            if read is not None:
                read[0] += 1
            if matches(segment, lead, now):
                yield lead

    def segment_count(self, name: str) -> SegmentCount:
        from chalicelib.http.bodies import SegmentCount

        segment = self.campaign.segments.get(name)
        if segment is None:
            raise NotFound("segment", name)
        read = [0]
        count = sum(1 for _ in self.segment_members(segment, read))
        return SegmentCount(segment=name, count=count, read=read[0], as_of=iso(self.clock.now()))

    def page(self, params: LeadListParams) -> LeadPage:
        """One page of the filtered lead list and the key of the next (None at the end)."""
        query = LeadQuery(
            stage=params.stage,
            min_score=params.min_score,
            max_score=params.max_score,
            form_id=params.form,
            utm_source=params.utm_source,
            created_from=iso(params.created_from) if params.created_from else None,
            created_to=iso(params.created_to) if params.created_to else None,
        )
        # A cursor belongs to its filters: resuming another query's position would skip or repeat.
        filters = hashlib.sha256(repr(query).encode()).hexdigest()[:16]
        start = None
        if params.cursor is not None:
            try:
                claims = self.signer.verify(LEADS_CURSOR, params.cursor, self.clock.now())
            except InvalidToken as e:
                raise ValidationFailed({"cursor": "not a cursor this list gave out, or expired"}) from e
            if claims.get("f") != filters or not isinstance(claims.get("k"), dict):
                raise ValidationFailed({"cursor": "belongs to other filters"})
            start = claims["k"]
        leads, next_key = self.store.find_leads(query, params.limit, start)
        return LeadPage(query, filters, leads, next_key)

    def cursor(self, page: LeadPage, key: Optional[dict[str, Any]]) -> Optional[str]:
        if key is None:
            return None
        claims = {"f": page.filters, "k": key}
        return self.signer.sign(LEADS_CURSOR, claims, self.clock.now() + CURSOR_LIFETIME)

    def leads(self, params: LeadListParams) -> LeadList:
        """``GET /admin/leads``: filtered, cursor-paginated, from the indexes (never a Scan)."""
        from chalicelib.http.bodies import LeadList

        page = self.page(params)
        return LeadList(leads=[summary(lead) for lead in page.leads], next_cursor=self.cursor(page, page.next_key))

    def csv(self, params: LeadListParams) -> CsvPage:
        """A page of the CSV export: up to ``limit`` rows, ending early when the text reaches
        ``CSV_PAGE_BYTES`` (rows hold free text), with the cursor of the rest."""
        from chalicelib.exports import leads_csv

        page = self.page(params)
        text, written = leads_csv(self.campaign, page.leads, CSV_PAGE_BYTES)
        next_key = page.next_key
        if written < len(page.leads):
            next_key = self.store.resume_key(page.query, page.leads[written - 1].lead_id)
        return CsvPage(text, self.cursor(page, next_key))

    def lead(self, lead_id: str) -> LeadDetail:
        record = self.store.lead_record(lead_id)
        if record is None:
            raise NotFound("lead", lead_id)
        return lead_detail(record, self.campaign.engagement)


def summary(lead: Lead) -> LeadSummary:
    from chalicelib.http.bodies import LeadSummary

    return LeadSummary(**_summary_fields(lead), owner=(lead.owner or {}).get("name"))


def _summary_fields(lead: Lead) -> dict[str, Any]:
    return {
        "lead_id": lead.lead_id,
        "email": lead.email,
        "stage": lead.stage,
        "score": lead.score,
        "created_at": lead.created_at,
        "form": lead.first_touch.form_id,
        "utm_source": lead.first_touch.utm_source,
        "unsubscribed": lead.unsubscribed_at is not None,
    }


def lead_detail(record: LeadRecord, rules: EngagementRules) -> LeadDetail:
    """Each open and click on the timeline carries its verdict and reasons
    (``chalicelib.engagement``), judged from the whole record as scoring judges it, so the team
    sees why a scanner's clicks earned no points."""
    from chalicelib.http import bodies

    lead = record.lead
    verdicts = engagement_verdicts(record.events, record.messages, rules)
    engaged: dict[str, dict[str, int]] = {
        label: dict.fromkeys(_ENGAGEMENT_COUNTED.values(), 0) for label in (HUMAN, MACHINE)
    }
    timeline: list[bodies.EventEntry | bodies.MessageEntry] = []
    for e in record.events:
        verdict = verdicts.get(e.event_id)
        judged: dict[str, Any] = {}
        if verdict is not None:
            judged = verdict.to_json()
            engaged[verdict.label][_ENGAGEMENT_COUNTED[EventType(e.type)]] += 1
        timeline.append(bodies.EventEntry(at=e.at, type=e.type, data=e.data, **judged))
    timeline += [bodies.MessageEntry(at=m.sent_at, message_id=m.message_id, subject=m.subject) for m in record.messages]
    return bodies.LeadDetail(
        lead=bodies.LeadProfile(
            **_summary_fields(lead),
            owner=bodies.Owner(**lead.owner) if lead.owner else None,
            updated_at=lead.updated_at,
            profile=lead.profile,
            custom=lead.custom,
            timezone=lead.timezone,
            unsubscribed_at=lead.unsubscribed_at,
            stage_reason=lead.stage_reason,
        ),
        consent=bodies.Consent(**lead.consent.to_item()) if lead.consent else None,
        attribution=bodies.Attribution(
            first_touch=bodies.Touch(**lead.first_touch.to_item()),
            last_touch=bodies.Touch(**lead.last_touch.to_item()),
        ),
        score=bodies.Score(
            total=lead.score,
            engagement=lead.score_engagement,
            fit=lead.score_fit,
            events_counted=lead.score_events,
            reset_at=lead.score_reset_at,
        ),
        email_engagement=bodies.EmailEngagement(**{label: bodies.Engaged(**n) for label, n in engaged.items()}),
        enrolments=[
            bodies.EnrolmentState(
                sequence=e.sequence_id,
                status=e.status,
                step_index=e.step_index,
                due_at=e.due_at,
                exit_reason=e.exit_reason,
            )
            for e in record.enrolments
        ],
        timeline=sorted(timeline, key=lambda entry: str(entry.at), reverse=True),
    )

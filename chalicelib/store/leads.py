"""The lead aggregate: its profile, with the events and enrolments written alongside it.

Capture, confirmation, events, rescoring and sales feedback each change the profile and add
items to the lead's partition in one write request, conditional on what was read, so a
concurrent change fails the write as a whole instead of being overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from chalicelib.entities import ConsentRecord, Enrolment, Event, Handoff, Lead, Message, Registration, Touch
from chalicelib.store import keys
from chalicelib.store.codec import serialize
from chalicelib.store.expressions import Expression, all_of, any_of
from chalicelib.store.registrations import Registrations
from chalicelib.vocabulary import ConsentStatus, EnrolmentStatus

if TYPE_CHECKING:
    from chalicelib.segments import IndexPlan

# A pending lead has a handful of items; a transaction takes 100.
_TRANSACTION_ITEMS = 100


@dataclass
class CaptureWrite:
    """Everything one accepted submission changes, written as one transaction.

    ``known_stage`` is the stage read before the write (None for a new lead): the write is
    conditional on it, so a concurrent change makes it fail cleanly rather than clobber.
    """

    lead_id: str
    now: str
    email: str
    email_identity: str
    touch: Touch
    event: Event
    known_stage: Optional[str]
    # False: the address as typed only applies to a new lead (a stranger cannot respell it).
    email_is_new: bool = True
    stage: Optional[str] = None  # set for a new lead, or to promote subscriber -> lead
    profile: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    consent: Optional[ConsentRecord] = None
    magnet: Optional[str] = None
    form_id: Optional[str] = None
    topics: tuple[str, ...] = ()  # subscribed by this submission
    # The lead's own fresh consent (a new lead, or its mailbox proven): the topics it names come
    # back on even where the lead had turned them off.
    topics_resumed: bool = False
    enrolments: list[Enrolment] = field(default_factory=list)
    # Epoch seconds after which an unconfirmed (double opt-in) new lead disappears by TTL.
    expires_at: Optional[int] = None
    # A new registration for one of the campaign's events, with the event's capacity.
    registration: Optional[Registration] = None
    registration_event: Optional[Event] = None  # its timeline event (event_registered)
    capacity: Optional[int] = None


@dataclass(frozen=True)
class LeadRecord:
    lead: Lead
    events: list[Event]
    enrolments: list[Enrolment]
    messages: list[Message]
    markers: frozenset[str] = frozenset()  # what the reports have counted of this lead (count_once)


@dataclass(frozen=True)
class LeadQuery:
    """Filters of the admin lead list; None means any."""

    stage: Optional[str] = None
    min_score: Optional[float] = None
    max_score: Optional[float] = None
    form_id: Optional[str] = None
    utm_source: Optional[str] = None
    created_from: Optional[str] = None  # ISO timestamps, inclusive
    created_to: Optional[str] = None


class Leads(Registrations):
    """Built on Registrations: a capture may register the lead for an event in its one write."""

    def get_lead(self, lead_id: str) -> Optional[Lead]:
        item = self._get(keys.profile(lead_id))
        return Lead.from_item(item) if item else None

    def lead_record(self, lead_id: str) -> Optional[LeadRecord]:
        """Everything kept in the lead's partition (profile, events, enrolments, messages): one Query."""
        items = self._query_lead(lead_id)
        lead = next((Lead.from_item(i) for i in items if keys.is_profile(i)), None)
        if lead is None:
            return None
        return LeadRecord(
            lead=lead,
            events=[Event.from_item(i) for i in keys.of_kind(items, keys.EVENT_PREFIX)],
            enrolments=[Enrolment.from_item(i) for i in keys.of_kind(items, keys.ENROL_PREFIX)],
            messages=[Message.from_item(i) for i in keys.of_kind(items, keys.MESSAGE_PREFIX)],
            markers=frozenset(keys.marker_names(items)),
        )

    def save_capture(self, write: CaptureWrite) -> None:
        """Upsert the lead, record the submission event and enrol, in one write request."""
        sets = {
            "lead_id": write.lead_id,
            "email_identity": write.email_identity,
            "updated_at": write.now,
            "last_touch": write.touch.to_item(),
            **write.profile,
            **{f"cf_{name}": value for name, value in write.custom.items()},
        }
        if_absent = {
            "email": write.email,
            "first_touch": write.touch.to_item(),
            "created_at": write.now,
            "score": 0,
            keys.LEAD_LIST_ATTRIBUTE: keys.LEAD_LIST,
        }
        if write.email_is_new:
            sets["email"] = if_absent.pop("email")
        adds: dict[str, Any] = {"submissions": 1}
        if write.stage is not None:
            sets["stage"] = write.stage
        if write.consent is not None:
            sets["consent"] = write.consent.to_item()
        if write.magnet is not None:
            adds["magnets"] = {write.magnet}
        if write.form_id is not None:
            adds["forms"] = {write.form_id}
        if write.topics:
            adds["topics"] = set(write.topics)
        if write.enrolments:
            adds["sequences"] = {e.sequence_id for e in write.enrolments}
        if write.registration is not None:
            adds["registered_for"] = {write.registration.event_id}
        if write.expires_at is not None:
            if_absent[keys.TTL_ATTRIBUTE] = write.expires_at

        profile = Expression().set_all(sets).add_all(adds)
        if write.topics and write.topics_resumed:
            profile.delete("topics_off", set(write.topics))
        for attribute, value in if_absent.items():
            profile.set_if_absent(attribute, value)
        if write.known_stage is None:
            condition: Optional[str] = profile.absent()
        else:
            condition = all_of(profile.exists(), profile.eq("stage", write.known_stage))
        operations: list[dict[str, Any]] = [
            {"Update": self._keyed(keys.profile(write.lead_id), profile, ConditionExpression=condition)},
            {"Put": self._new_item(keys.event_item(write.event, write.expires_at))},
        ]
        for enrolment in write.enrolments:
            operations.append({"Put": self._new_item(keys.enrolment_item(enrolment, write.expires_at))})
        if write.registration is not None:
            operations += self.registration_operations(write.registration, write.capacity)
            if write.registration_event is not None:
                operations.append({"Put": self._new_item(keys.event_item(write.registration_event, write.expires_at))})
        self._transact(operations)

    def confirm_lead(self, lead_id: str, at: str, due_by_sequence: dict[str, str], event: Event) -> None:
        """Double opt-in confirmed: consent granted, waiting enrolments start, TTL removed.

        All in one transaction, conditional on the consent still being pending.
        """
        items = self._query_lead(lead_id)
        consent = Expression().set(("consent", "status"), ConsentStatus.GRANTED).set(("consent", "confirmed_at"), at)
        consent.remove(keys.TTL_ATTRIBUTE)
        pending = consent.eq(("consent", "status"), ConsentStatus.PENDING_CONFIRMATION)
        operations: list[dict[str, Any]] = [
            {"Update": self._keyed(keys.profile(lead_id), consent, ConditionExpression=pending)},
            {"Put": self._new_item(keys.event_item(event))},
        ]
        for item in items:
            waiting = item.get("status") == EnrolmentStatus.AWAITING_CONFIRMATION
            if keys.is_kind(item, keys.ENROL_PREFIX) and waiting:
                start = Expression().set("status", EnrolmentStatus.ACTIVE)
                start.set("due_at", due_by_sequence.get(str(item.get("sequence_id")), at))
                start.set(keys.DUE_SHARD, keys.due_shard(lead_id)).remove(keys.TTL_ATTRIBUTE)
                still_waiting = start.eq("status", EnrolmentStatus.AWAITING_CONFIRMATION)
                operations.append({"Update": self._keyed(keys.key_of(item), start, ConditionExpression=still_waiting)})
            elif not keys.is_profile(item) and keys.TTL_ATTRIBUTE in item:
                keep = Expression().remove(keys.TTL_ATTRIBUTE)
                operations.append({"Update": self._keyed(keys.key_of(item), keep)})
        self._transact(operations[:_TRANSACTION_ITEMS])

    def record_event(
        self,
        event: Event,
        profile_adds: Optional[dict[str, str]] = None,
        profile_sets: Optional[dict[str, str]] = None,
        *,
        note_type: bool = True,
    ) -> bool:
        """Record an event on an existing lead, and note it on the profile, in one write.

        ``note_type=False`` keeps the event off the profile's ``event_types`` (what nurture
        conditions and exits read): for events nobody vouches for. Returns False (and writes
        nothing) when the lead does not exist.
        """
        adds: dict[str, set[str]] = {"event_types": {event.type}} if note_type else {}
        for attribute, added in (profile_adds or {}).items():
            adds[attribute] = {added}
        profile = Expression().add_all(adds)
        for attribute, value in (profile_sets or {}).items():
            profile.set_if_absent(attribute, value)
        target = self._keyed(keys.profile(event.lead_id), profile, ConditionExpression=profile.exists())
        # With nothing to note on the profile, only its existence is checked.
        noted = {"Update": target} if profile.update() else {"ConditionCheck": target}
        return self._transact_if([noted, {"Put": self._new_item(keys.event_item(event))}])

    def save_score(
        self,
        lead_id: str,
        fields: dict[str, Any],
        events_seen: int,
        *,
        string_sets: Optional[Mapping[str, set[str]]] = None,
        from_stage: Optional[str] = None,
        stage_event: Optional[Event] = None,
        handoff: Optional[Handoff] = None,
    ) -> bool:
        """Write a recomputed score, only if it counts more events than the stored one.

        ``string_sets`` replace whole profile sets (an empty one is removed, as DynamoDB keeps
        no empty sets): what nurture reads of engagement, recomputed with the score; a field
        given as None is removed. With a
        stage change, the write is also conditional on the stage read, and the stage
        event and the handoff are written in the same transaction: a crossing happens once.
        Returns False when a newer score (or another crossing) got there first.
        """
        score = Expression().set_all({k: v for k, v in fields.items() if v is not None})
        score.set("score_events", events_seen)
        for attribute in [k for k, v in fields.items() if v is None]:
            score.remove(attribute)
        for attribute, members in (string_sets or {}).items():
            if members:
                score.set(attribute, set(members))
            else:
                score.remove(attribute)
        newer = any_of(score.absent("score_events"), score.compare("score_events", "<", events_seen))
        same_stage = score.eq("stage", from_stage) if from_stage is not None else None
        condition = all_of(score.exists(), newer, same_stage)
        update = self._keyed(keys.profile(lead_id), score, ConditionExpression=condition)
        if stage_event is None and handoff is None:
            return self._write_if("update_item", update)
        operations: list[dict[str, Any]] = [{"Update": update}]
        if stage_event is not None:
            operations.append({"Put": self._new_item(keys.event_item(stage_event))})
        if handoff is not None:
            operations.append({"Put": self._new_item(keys.handoff_item(handoff))})
        return self._transact_if(operations)

    def save_preferences(
        self,
        lead_id: str,
        topics_on: list[str],
        topics_off: list[str],
        paused_until: Optional[str],
        event: Event,
    ) -> bool:
        """The preference centre's choice, with its event, in one write: the topic sets replaced
        (an empty one removed) and the pause set or lifted. False (nothing written): no such lead."""
        choice = Expression()
        for attribute, members in (("topics", topics_on), ("topics_off", topics_off)):
            if members:
                choice.set(attribute, set(members))
            else:
                choice.remove(attribute)
        if paused_until is not None:
            choice.set("paused_until", paused_until)
        else:
            choice.remove("paused_until")
        target = self._keyed(keys.profile(lead_id), choice, ConditionExpression=choice.exists())
        return self._transact_if([{"Update": target}, {"Put": self._new_item(keys.event_item(event))}])

    def turn_topic_off(self, lead_id: str, topic: str, event: Event) -> bool:
        """One topic off (a broadcast footer's "unsubscribe from <topic>"), with its event, in
        one write. False (nothing written): no such lead, or the topic was off already."""
        off = Expression().delete("topics", {topic}).add("topics_off", {topic})
        condition = all_of(off.exists(), f"NOT contains({off.name('topics_off')}, {off.value(topic)})")
        target = self._keyed(keys.profile(lead_id), off, ConditionExpression=condition)
        return self._transact_if([{"Update": target}, {"Put": self._new_item(keys.event_item(event))}])

    def set_stage(
        self, lead_id: str, fields: dict[str, Any], event: Event, enrolment: Optional[Enrolment] = None
    ) -> bool:
        """Sales feedback: set the stage (and what goes with it) with its event, in one write.

        A recycle enrolment replaces any earlier one in that sequence. False: no such lead.
        """
        stage = Expression().set_all(fields)
        operations: list[dict[str, Any]] = [
            {"Update": self._keyed(keys.profile(lead_id), stage, ConditionExpression=stage.exists())},
            {"Put": self._new_item(keys.event_item(event))},
        ]
        if enrolment is not None:
            operations.append({"Put": self._item(keys.enrolment_item(enrolment))})
        return self._transact_if(operations)

    # -- the admin lead list ----------------------------------------------------------------------

    def find_leads(
        self, query: LeadQuery, limit: int, start: Optional[dict[str, Any]] = None
    ) -> tuple[list[Lead], Optional[dict[str, Any]]]:
        """Up to ``limit`` leads matching ``query`` and the key to go on from (None at the end).

        Never a Scan: with a stage, the stage index (highest score first, the score range in
        the key condition); without, the creation index (newest first, the created range in the
        key condition). The other filters are filter expressions on that index. Each Query asks
        for no more items than are still wanted, so the returned key is exactly where to resume.
        """
        listed = Expression()
        score = listed.between("score", query.min_score, query.max_score)
        created = listed.between("created_at", query.created_from, query.created_to)
        if query.stage is not None:
            condition, filters = all_of(listed.eq("stage", query.stage), score), [created]
        else:
            condition, filters = all_of(listed.eq(keys.LEAD_LIST_ATTRIBUTE, keys.LEAD_LIST), created), [score]
        for attribute, wanted in (("form_id", query.form_id), ("utm_source", query.utm_source)):
            if wanted is not None:
                filters.append(listed.eq(("first_touch", attribute), wanted))
        request = {
            "IndexName": _index(query),
            "ScanIndexForward": False,
            **listed.params(KeyConditionExpression=condition, FilterExpression=all_of(*filters)),
        }
        found: list[Lead] = []
        key = start
        for items, resume in self._query_pages(request, start=start, total=limit):
            found += [Lead.from_item(i) for i in items]
            key = resume
        return found, key

    def segment_candidates(self, plan: IndexPlan, page_size: int = 500) -> Iterator[Lead]:
        """Every profile the plan's index reads hold (a superset of the segment), page by page
        as they are wanted: one stage-index Query per stage (the score range in the key
        condition), else one creation-index Query (the created range in it). Never a Scan."""
        for leads, _ in self.segment_pages(plan, page_size=page_size):
            yield from leads

    def segment_pages(
        self, plan: IndexPlan, cursor: Optional[str] = None, page_size: int = 500
    ) -> Iterator[tuple[list[Lead], Optional[str]]]:
        """``segment_candidates`` a page at a time, each with the cursor to go on from after it
        (None after the last): a broadcast enrols its recipients across ticks and crashes."""
        requests = []
        if plan.stages is not None:
            for stage in plan.stages:
                listed = Expression()
                score = listed.between("score", plan.score_min, plan.score_max)
                condition = all_of(listed.eq("stage", stage), score)
                requests.append({"IndexName": keys.STAGE_INDEX, **listed.params(KeyConditionExpression=condition)})
        else:
            listed = Expression()
            created = listed.between("created_at", plan.created_after, plan.created_before)
            condition = all_of(listed.eq(keys.LEAD_LIST_ATTRIBUTE, keys.LEAD_LIST), created)
            requests.append({"IndexName": keys.CREATED_INDEX, **listed.params(KeyConditionExpression=condition)})
        first, start = 0, None
        if cursor is not None:
            resume = json.loads(cursor)
            first, start = int(resume["request"]), resume["key"]
        for number in range(first, len(requests)):
            pages = self._query_pages(requests[number], start=start if number == first else None, page_size=page_size)
            for items, key in pages:
                after = number if key is not None else number + 1
                at_end = key is None and after == len(requests)
                yield [Lead.from_item(i) for i in items], None if at_end else json.dumps({"request": after, "key": key})

    def resume_key(self, query: LeadQuery, lead_id: str) -> dict[str, Any]:
        """Where ``find_leads(query)`` goes on right after this lead: its key in the index used."""
        profile = self._get(keys.profile(lead_id)) or {}
        return serialize(keys.index_key(lead_id, profile, _index(query)))


def _index(query: LeadQuery) -> str:
    return keys.STAGE_INDEX if query.stage is not None else keys.CREATED_INDEX

"""The JSON Schema of a form post, for the OpenAPI document: every field a form may declare."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

from pydantic import BaseModel

from chalicelib.models import (
    CONSENT_FIELD,
    LEAD_TOKEN_FIELD,
    RENDERED_AT_FIELD,
    TRACKING_FIELDS,
    BotDefence,
    Form,
    StandardField,
    Tracking,
    submission_model,
)

Schema = dict[str, Any]
STRING: Schema = {"type": "string"}


def without_null(schema: Schema) -> Schema:
    """An ``Optional[X]`` that is absent rather than null (a query parameter, an answer's
    field left out when it has no value, a form field) is X."""
    variants = schema.get("anyOf")
    if variants is None:
        return schema
    rest = [v for v in variants if v != {"type": "null"}]
    stripped = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**rest[0], **stripped} if len(rest) == 1 else {**stripped, "anyOf": rest}


def form_submission(model_schema: Callable[[type[BaseModel]], Schema]) -> Schema:
    """Every field a form may declare, from the model a form with all standard fields builds
    (``model_schema``: a model's schema, its nested definitions hoisted into the document's).

    Which fields a form requires, which custom fields it takes and whether consent is required
    are per form, in the campaign file; unknown fields are ignored, never stored.
    """
    every_field = Form(
        kind="signup",
        thank_you_url="https://example.com/thanks",
        fields={"email": "required", **dict.fromkeys(get_args(StandardField)[1:], "optional")},
    )
    schema = model_schema(submission_model(every_field))
    tracking = model_schema(Tracking)
    honeypot = BotDefence().honeypot_field
    properties: dict[str, Schema] = {
        **schema["properties"],
        "email": {
            "type": "string",
            "format": "email",
            "maxLength": 254,
            "description": "one address as text, validated (no DNS lookup); an ASCII part before the @",
        },
        **{name: tracking["properties"][name] for name in TRACKING_FIELDS},
        CONSENT_FIELD: {
            "anyOf": [{"type": "boolean"}, STRING],
            "description": 'marketing consent: true, or "on", "true", "1", "yes" as HTML checkboxes send it; '
            "required by forms that ask for consent",
        },
        RENDERED_AT_FIELD: {
            "anyOf": [{"type": "number"}, STRING],
            "description": "when the page rendered the form, in milliseconds since the epoch (bot defence): "
            "a JSON post without it, or with one in the future or not a number, is answered as a success and "
            "nothing is stored",
        },
        LEAD_TOKEN_FIELD: {
            "type": "string",
            "maxLength": 4096,
            "description": "the lead token the page holds; one that came through a link in the lead's own "
            "email lets this submission change the lead's existing profile fields",
        },
        honeypot: {
            "type": "string",
            "maxLength": 0,
            "description": f"honeypot (the campaign's bot_defence.honeypot_field, {honeypot!r} by default): "
            "must stay empty; a filled one is answered as a success and nothing is stored",
        },
    }
    return {
        "title": "FormSubmission",
        "type": "object",
        "description": "A form's fields. Fields the form does not declare (custom fields excepted) are ignored; "
        "an empty string means not given.",
        "properties": properties,
        "required": ["email"],
        "additionalProperties": {"description": "the form's custom fields (text, number, choice, checkbox)"},
    }


def urlencoded(schema: Schema) -> Schema:
    """The same fields as an HTML form posts them: every value a string."""
    properties = {
        name: {"type": "string", **{k: v for k, v in without_null(prop).items() if k in ("maxLength", "pattern")}}
        for name, prop in schema["properties"].items()
    }
    properties["email"] = dict(schema["properties"]["email"])
    return {**schema, "title": "FormSubmissionFields", "properties": properties}

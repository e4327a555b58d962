"""JSON Schemas of Open311 GeoReport v2 answers, for validating Whistle's JSON.

Written for this project from the GeoReport v2 specification (the wiki page's field
tables: which fields each response has, which are required, their types and enums)
and the mySociety ``servicerequestupdates`` extension. They express the same
constraints as the schemas in ``open311/schema-validation`` (``schema/georeport-v2/
service.json``, ``service-definition.json``, ``request.json``...), which carry no
licence and so are not copied here. Stricter in two places, where the spec is: a date
must carry its time zone, and a POST's answer has exactly its three fields.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker

FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _w3c_datetime(value: object) -> bool:
    """The spec's "w3 format", time zone included (Z or an offset)."""
    if not isinstance(value, str):
        return True
    return datetime.fromisoformat(value).tzinfo is not None and "T" in value


@FORMATS.checks("uri")
def _uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme and parts.netloc)


def _maybe(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


TEXT = {"type": "string"}
DATETIME = {"type": "string", "format": "date-time"}

SERVICE = {
    "type": "object",
    "required": ["service_code", "service_name", "metadata", "type"],
    "properties": {
        "service_code": TEXT,
        "service_name": TEXT,
        "description": _maybe(TEXT),
        "metadata": {"type": "boolean"},
        "type": {"enum": ["realtime", "batch", "blackbox"]},
        "keywords": _maybe(TEXT),
        "group": _maybe(TEXT),
    },
}

SERVICES = {"type": "array", "items": SERVICE}

SERVICE_DEFINITION = {
    "type": "object",
    "required": ["service_code", "attributes"],
    "properties": {
        "service_code": TEXT,
        "attributes": {"type": "array", "items": {
            "type": "object",
            "required": ["variable", "code", "datatype", "required"],
            "properties": {
                "variable": {"type": "boolean"},
                "code": TEXT,
                "datatype": {"enum": ["string", "number", "datetime", "text",
                                      "singlevaluelist", "multivaluelist"]},
                "required": {"type": "boolean"},
                "datatype_description": _maybe(TEXT),
                "order": _maybe({"type": "integer"}),
                "description": _maybe(TEXT),
                "values": {"type": "array", "items": {
                    "type": "object", "required": ["key", "name"],
                    "properties": {"key": TEXT, "name": TEXT}}},
            },
        }},
    },
}

REQUEST = {
    "type": "object",
    "required": ["service_request_id", "status", "service_code", "requested_datetime"],
    "properties": {
        "service_request_id": TEXT,
        "status": {"enum": ["open", "closed"]},
        "status_notes": _maybe(TEXT),
        "service_name": _maybe(TEXT),
        "service_code": TEXT,
        "description": _maybe({"type": "string", "maxLength": 4000}),
        "agency_responsible": _maybe(TEXT),
        "service_notice": _maybe(TEXT),
        "requested_datetime": DATETIME,
        "updated_datetime": _maybe(DATETIME),
        "expected_datetime": _maybe(DATETIME),
        "address": _maybe(TEXT),
        "address_id": _maybe(TEXT),
        "zipcode": _maybe(TEXT),
        "lat": _maybe({"type": "number"}),
        "long": _maybe({"type": "number"}),
        "media_url": _maybe({"type": "string", "format": "uri"}),
    },
}

REQUESTS = {"type": "array", "items": REQUEST}

POST_RESPONSE = {
    "type": "array", "minItems": 1, "maxItems": 1,
    "items": {
        "type": "object",
        "required": ["service_request_id", "service_notice", "account_id"],
        "additionalProperties": False,
        "properties": {
            "service_request_id": TEXT,
            "service_notice": _maybe(TEXT),
            "account_id": _maybe(TEXT),
        },
    },
}

ERRORS = {
    "type": "array", "minItems": 1,
    "items": {
        "type": "object",
        "required": ["code", "description"],
        "additionalProperties": False,
        "properties": {"code": {"type": ["integer", "string"]}, "description": TEXT},
    },
}

DISCOVERY = {
    "type": "object",
    "required": ["changeset", "contact", "key_service", "endpoints"],
    "properties": {
        "changeset": TEXT, "contact": TEXT, "key_service": TEXT,
        "endpoints": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["specification", "url", "changeset", "type", "formats"],
            "properties": {
                "specification": TEXT, "url": {"type": "string", "format": "uri"},
                "changeset": TEXT, "type": {"enum": ["production", "test"]},
                "formats": {"type": "array", "items": TEXT, "minItems": 1},
            },
        }},
    },
}

# mySociety's extension, as FixMyStreet reads it (perllib/Open311/UpdatesBase.pm).
UPDATES = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["update_id", "service_request_id", "status", "updated_datetime"],
        "properties": {
            "update_id": TEXT,
            "service_request_id": TEXT,
            "status": TEXT,
            "updated_datetime": DATETIME,
            "description": _maybe(TEXT),
            "media_url": _maybe({"type": "string", "format": "uri"}),
            "external_status_code": _maybe(TEXT),
        },
    },
}


def validate(document: object, schema: dict) -> None:
    """Raise ``jsonschema.ValidationError`` (the first problem) unless it conforms."""
    Draft202012Validator(schema, format_checker=FORMATS).validate(document)

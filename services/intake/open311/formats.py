"""Open311's two formats and its error shape. Pure: no I/O.

JSON follows the spec's "Spark convention" mapping of its XML: a list of records is a
JSON array, and in XML a root element holding one child element per record. The root
and child names are the spec's (``services``/``service``, ``service_requests``/
``request``, ``errors``/``error``...). ``None`` is JSON ``null`` and an empty XML
element (``<account_id/>``), as in the spec's examples; booleans are ``true``/``false``.
"""

from __future__ import annotations

import re
from typing import Any
from xml.etree import ElementTree

from werkzeug.wrappers import Response

from shared.jsoncodec import dumps

FORMATS = {"json": "application/json; charset=utf-8", "xml": "text/xml; charset=utf-8"}

# A list under this key becomes this many child elements of this name (XML only).
LIST_ITEMS = {
    "services": "service",
    "attributes": "attribute",
    "values": "value",
    "service_requests": "request",
    "errors": "error",
    "service_request_updates": "request_update",
    "endpoints": "endpoint",
    "formats": "format",
}


class Open311Error(Exception):
    """An error answered as Open311 wants it: an array of ``{code, description}``.

    ``status`` is the HTTP status: 404 for what does not exist, 403 for a missing or
    bad ``api_key``, 400 for anything else (the spec's rule, even for a store that is
    down: "General Service Error ... eg CRM is down"). ``code`` in the body may be
    more specific than the status (the spec allows it), e.g. 429 for the posting limit.
    """

    def __init__(self, status: int, *errors: tuple[int, str], retry_after: int | None = None):
        super().__init__("; ".join(description for _, description in errors))
        self.status = status
        self.errors = list(errors) or [(status, "error")]
        self.retry_after = retry_after

    @classmethod
    def bad_request(cls, *descriptions: str) -> Open311Error:
        return cls(400, *((400, d) for d in descriptions))

    @classmethod
    def too_large(cls, description: str) -> Open311Error:
        """A body over the limit: 413 in the body, as Open311 keeps its status to 400."""
        return cls(400, (413, description))

    @classmethod
    def not_found(cls, description: str) -> Open311Error:
        return cls(404, (404, description))

    @classmethod
    def forbidden(cls, description: str) -> Open311Error:
        return cls(403, (403, description))

    def body(self) -> list[dict[str, Any]]:
        return [{"code": code, "description": description} for code, description in self.errors]


def render(fmt: str, root: str, payload: Any, status: int = 200,
           headers: dict[str, str] | None = None) -> Response:
    """``payload`` (a list of records, or one record) as ``fmt``; ``root`` names the
    XML root element (a list's items are named by :data:`LIST_ITEMS`)."""
    body = dumps(payload) if fmt == "json" else to_xml(root, payload)
    # Browser apps (a city's web map) read Open311 from other origins. No credentials
    # ride on it: a key travels as a parameter, never as a cookie.
    headers = {"Access-Control-Allow-Origin": "*", **(headers or {})}
    return Response(body, status=status, headers=headers, content_type=FORMATS[fmt])


# A browser's preflight (CORS) for a POST with a JSON body, or any custom header:
# clients send Content-Type; the key travels as a parameter, never as a header.
ALLOW_HEADERS = "Content-Type"
PREFLIGHT_MAX_AGE_S = 86400  # browsers cap it lower (Chromium: 2 hours)


def preflight(methods: list[str]) -> Response:
    """204 to a CORS preflight (or a plain OPTIONS): what the resource takes."""
    allowed = ", ".join(methods)
    response = Response(status=204, headers={
        "Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": allowed,
        "Access-Control-Allow-Headers": ALLOW_HEADERS,
        "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S), "Allow": allowed})
    del response.headers["Content-Type"]
    return response


def render_error(fmt: str, error: Open311Error) -> Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
    if any(code == 413 for code, _ in error.errors):
        headers["Connection"] = "close"  # the rest of the body is never read
    return render(fmt if fmt in FORMATS else "xml", "errors", error.body(), error.status,
                  headers)


_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n'
# What XML 1.0 cannot carry at all, even escaped (its Char production): ElementTree
# writes these as they are, and one U+FFFF in one description made the whole list
# ill-formed, so an XML client (FixMyStreet reads only XML) could read none of it.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def to_xml(root: str, payload: Any) -> bytes:
    """UTF-8, with the declaration naming the encoding, as the spec requires."""
    element = ElementTree.Element(root)
    _fill(element, root, payload)
    return (_DECLARATION + ElementTree.tostring(element, encoding="unicode")).encode("utf-8")


def _fill(element: ElementTree.Element, name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _fill(ElementTree.SubElement(element, key), key, item)
    elif isinstance(value, list | tuple):
        child = LIST_ITEMS.get(name, "item")
        for item in value:
            _fill(ElementTree.SubElement(element, child), child, item)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    else:
        element.text = _NOT_XML.sub("\ufffd", str(value))

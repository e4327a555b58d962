"""How a page is answered: templates, security headers, HTML errors, static files.

- :class:`PageHandler` (``@page``) is ``shared.web``'s ``@http`` for pages: the same
  per-process server (so ``whistle up`` serves pages and API on one address), but an
  error becomes an HTML page in the reader's language, never JSON or a trace.
- Every response it sends carries :data:`SECURITY_HEADERS`: a Content-Security-Policy
  allowing no inline script, ``frame-ancestors 'none'``, nosniff, no referrer (a
  resident's link carries a token) and no caching of pages.
"""

from __future__ import annotations

import mimetypes
from functools import partial
from logging import getLogger
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from eventlet.event import Event
from jinja2 import Environment, FileSystemLoader, select_autoescape
from werkzeug.exceptions import HTTPException
from werkzeug.security import safe_join
from werkzeug.wrappers import Request, Response

from services.web.views import (
    LANGUAGES,
    Translator,
    agency_names,
    choices,
    language_of,
    local_time,
    redact_links,
    refusal,
    tasks_of,
    triage_reason,
)
from shared.errors import EXPECTED_ERRORS, MalformedBody, NotFound, WhistleError
from shared.web import ERROR_SHAPES, JsonHttpHandler, error_headers, error_response

_log = getLogger(__name__)

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
LANG_COOKIE = "whistle_lang"

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True, lstrip_blocks=True,
)
templates.filters["localtime"] = local_time
templates.filters["redact"] = redact_links
templates.globals.update(triage_reason=triage_reason, agency_names=agency_names,
                         choices=choices, refusal=refusal,
                         tasks_of=tasks_of)


def reader_language(request, fallback: str = "zh") -> str:
    """``?lang=`` first (and remembered by :func:`render`), then the cookie."""
    asked = request.args.get("lang")
    if asked in LANGUAGES:
        return asked
    return language_of(request.cookies.get(LANG_COOKIE), fallback)


def language_switch(request, lang: str, here: str = "") -> str:
    """The header's link to this page in the other language, with the page's own query
    kept: a resident's page opens only with its link's ``token`` (a bare ``?lang=``
    showed them "link not valid"), and the board keeps its filters. ``here``: the page's
    own path when it answers a form's POST (a form's address is no page to GET)."""
    other = Translator(lang)("lang_other")
    kept = [(k, v) for k, v in request.args.items(multi=True) if k != "lang"]
    return here + "?" + urlencode([*kept, ("lang", other)])


def render(request, template: str, status: int = 200, lang: str | None = None,
           here: str = "", **context: Any) -> Response:
    lang = lang or reader_language(request)
    t = Translator(lang)
    body = templates.get_template(template).render(t=t, lang=lang, path=request.path,
                                                   lang_href=language_switch(request, lang, here),
                                                   reload_to=reload_to(request, here), **context)
    response = Response(body, status=status, mimetype="text/html")
    if request.args.get("lang") in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, httponly=True,
                            samesite="Lax", path="/")
    return response


def reload_to(request, here: str = "") -> str | None:
    """Where a page brought back by Back or Forward is fetched afresh from (static/
    fresh.js): a page that was fetched, from its own address ("self"); a page that
    answered a form, from the page the form was on (``here``: a form's address is no page
    to fetch), or not at all when there is none."""
    if request.method in ("GET", "HEAD"):
        return "self"
    return here or None


def redirect(location: str, status: int = 303) -> Response:
    return Response("", status=status, headers={"Location": location})


class PageHandler(JsonHttpHandler):
    """``@http`` for pages: HTML errors in the reader's language, security headers on
    every response. ``handle_request`` is nameko's, with the request passed on to the
    error page (nameko's ``response_from_exception`` does not get it)."""

    def __init__(self, method, url, expected_exceptions=EXPECTED_ERRORS, **kwargs):
        # A page's refusals (a 401, a 403, no such issue, a bad filter) are answers the
        # code chose, as on the API: nameko logs them as a WARNING line without a
        # traceback (shared.logging), not as an ERROR with one for every mistyped link.
        super().__init__(method, url, expected_exceptions=expected_exceptions, **kwargs)

    def handle_request(self, request):
        request.shallow = False
        try:
            form_is_utf8(request)
            context_data = self.server.context_data_from_headers(request)
            args, kwargs = self.get_entrypoint_parameters(request)
            self.check_signature(args, kwargs)
            done = Event()
            self.container.spawn_worker(self, args, kwargs, context_data=context_data,
                                        handle_result=partial(self.handle_result, done))
            response = self.response_from_result(done.wait())
        except Exception as exc:
            response = error_page(request, exc)
        return with_security_headers(response)


def error_page(request, exc: Exception) -> Response:
    """An error as the reader sees it: JSON for the pages' own ``.json`` requests, else
    a page saying what happened in plain words (never a trace)."""
    if request.path.endswith(".json"):
        return error_response(exc)
    if isinstance(exc, WhistleError):
        status = exc.status
    elif isinstance(exc, HTTPException) and exc.code:
        status = exc.code  # refused before any page ran: no such page, or the wrong method
    else:
        _log.error("unhandled error in a page: %s", type(exc).__name__, exc_info=exc)
        status = 500
    if status == 401:
        return redirect("/signin")
    key = {403: "forbidden", 404: "not_found", 405: "wrong_method", 413: "too_large",
           429: "rate_limited", 503: "unavailable"}.get(status, "error_title")
    if isinstance(exc, MalformedBody):
        key = "malformed_form"
    if isinstance(exc, WhistleError) and exc.code == "csrf":
        # A form from before this session (signed out and in again in another tab): not
        # a refusal of the person ("您无权…" told staff they lacked a right they have).
        key = "csrf_bad"
    detail = exc.message if isinstance(exc, WhistleError) and status in (409, 422) else ""
    response = render(request, "error.html", status=status, message_key=key, detail=detail,
                      seconds=getattr(exc, "retry_after", None))
    # The API's headers too: a 429 page says when to come back (Retry-After) as the
    # API's 429 does, a 503 as well, and a 413 closes the connection.
    response.headers.update(error_headers(exc) or {})
    return response


page = PageHandler.decorator

FORM = "application/x-www-form-urlencoded"


def form_is_utf8(request: Request) -> None:
    """A form sent in another encoding (a latin-1 or GBK page's bytes) is a 400 saying so.
    werkzeug's form parser answers any byte it cannot decode with 413 "too large", which
    told the clerk to shorten a few bytes, and raised it inside the page, logged as an
    unexpected error with its trace. The body is read once (at most the 64 KiB the door
    lets by) and kept for the parser."""
    if request.method != "POST" or request.mimetype != FORM:
        return
    try:
        request.get_data(cache=True).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBody("the form was not sent as UTF-8") from None


def refused_page(environ, exc: Exception) -> Response:
    """A refusal before any page ran (a mistyped address, a form's address opened as a
    page, a body over the limit), as a page in the reader's language, not JSON."""
    return with_security_headers(error_page(Request(environ, shallow=True), exc))


# The pages' own paths (``/agencies/…`` is the agency API's, and keeps its JSON).
for _prefix in ("/desk/", "/agency/", "/resident/", "/ops/", "/static/"):
    ERROR_SHAPES[_prefix] = refused_page


def with_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def static_file(request, name: str) -> Response:
    """A file from ``static/`` (CSS, JS, icons): cached for a day, never a listing."""
    path = safe_join(str(STATIC_DIR), name)
    if path is None or not Path(path).is_file():
        # A page in the reader's language, as every mistyped path under /static/
        # promises: it was a bare "not found" in plain text. Answered, not raised: a
        # browser's devtools asking for app.js.map is no error to log with a trace.
        return error_page(request, NotFound(f"no static file {name!r}"))
    mimetype = mimetypes.guess_type(path)[0] or "application/octet-stream"
    response = Response(Path(path).read_bytes(), mimetype=mimetype)
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response

"""JSON over HTTP for every service, on one shared address when run together.

- :class:`JsonHttpHandler` (``@http``) turns a returned dict/list into JSON and
  any exception into a JSON error: a :class:`~shared.errors.WhistleError` keeps
  its status and fields; anything else is a bare 500 with no stack trace.
- :func:`read_json` enforces content type, body size, UTF-8, JSON and its nesting
  depth (:func:`parse_json_body`) before validating into the request model.
- :class:`ProcessWebServer` is one listening socket per address *per process*.
  nameko's ``WebServer`` is shared per container, so four services in one
  process (``whistle up``) would each try to bind the same port. The URL map
  is rebuilt whenever a service registers a route, because containers start
  concurrently and may register after the socket is already listening.
"""

from __future__ import annotations

import inspect
import json
import re
from functools import cached_property
from logging import getLogger
from typing import Any, TypeVar
from urllib.parse import unquote_plus

import eventlet
from eventlet import wsgi
from nameko.constants import WEB_SERVER_CONFIG_KEY
from nameko.exceptions import IncorrectSignature
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import HttpOnlyProtocol, WebServer, WsgiApp
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.wrappers import Request, Response

from shared.auth import TOKEN_QUERY_PARAMETER
from shared.errors import (
    InvalidPayload,
    MalformedBody,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    WhistleError,
)
from shared.jsoncodec import dumps
from shared.logging import get_logger

_log = getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
# No Whistle or Open311 body nests deeper than 3; a deeper one is a mistake or an attack
# (10,000 nested brackets fit in 60 KB and exhaust the parser's recursion: a 500).
MAX_JSON_DEPTH = 32
# The longest request line eventlet accepts before its own bare 414. Open311's
# ``service_request_id`` takes up to 1,000 ids (services.intake.open311.mapping.MAX_IDS):
# 1,000 ids of 17 characters, each with a percent-encoded comma, are 20,000 bytes; 32 KiB
# leaves room for longer ids and the other parameters. eventlet's default (8 KiB) held
# fewer than 500.
MAX_REQUEST_LINE = 32 * 1024
M = TypeVar("M", bound=BaseModel)

_servers: dict[str, ProcessWebServer] = {}


JSON_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                "X-Content-Type-Options": "nosniff"}
"""What every JSON answer says unless its caller's ``headers`` say otherwise."""


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer, kept by no cache (``Cache-Control: no-store``, unless ``headers``
    say otherwise): each is someone's issue as their token may read it, a resident's
    link in the address among them, as the pages are. For that link, too, it sends no
    ``Referer`` on (the address holds the token) and is never sniffed as anything but
    JSON (it quotes residents' words)."""
    # One dict to the constructor, not a setdefault a header: every API answer pays this.
    return Response(dumps(payload), status=status, mimetype="application/json",
                    headers=JSON_HEADERS if headers is None else {**JSON_HEADERS, **headers})


def error_headers(exc: Exception) -> dict[str, str] | None:
    """The headers a refusal carries, whatever shape its body has (JSON, a page):
    ``Retry-After`` on a 429 (the seconds left in the window) and a 503, ``Connection:
    close`` on a 413, ``Allow`` on a 405 (RFC 9110 requires it: the methods the path
    takes, as routing found them; sorted, as routing's order is the services' start order)."""
    if isinstance(exc, MethodNotAllowed):
        return {"Allow": ", ".join(sorted(set(exc.valid_methods)))} if exc.valid_methods else None
    if not isinstance(exc, WhistleError):
        return None
    if exc.status == 503:
        return {"Retry-After": "5"}
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, PayloadTooLarge):
        return {"Connection": "close"}
    return None


def error_response(exc: Exception) -> Response:
    if isinstance(exc, WhistleError):
        return json_response(exc.to_json(), exc.status, error_headers(exc))
    if isinstance(exc, HTTPException):
        return json_response({"error": {"code": exc.name.lower().replace(" ", "_"),
                                        "message": _plain_description(exc)}}, exc.code or 500,
                             error_headers(exc))
    _log.error("unhandled error in HTTP handler: %s", type(exc).__name__, exc_info=exc)
    return json_response({"error": {"code": "internal", "message": "internal error"}}, 500)


def _plain_description(exc: HTTPException) -> str:
    """What went wrong, in words a caller can act on: a 405 names the methods the address
    does take (werkzeug's text says only that this one is not allowed)."""
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        return f"this address takes only {', '.join(sorted(set(exc.valid_methods)))}"
    return exc.description


class _LiveWsgiApp(WsgiApp):
    def __init__(self, server: ProcessWebServer):  # noqa: D107 - no eager url map
        self.server = server

    @property
    def url_map(self):
        return self.server.url_map()

    def __call__(self, environ, start_response):
        length = _declared_length(environ)
        if length is not None and length > MAX_BODY_BYTES:
            # Refused before a byte of the body is read: the client learns why (413, and
            # the connection closes), instead of the server reading what it will refuse.
            return _refusal(environ, PayloadTooLarge(
                f"body is larger than {MAX_BODY_BYTES} bytes"))(environ, start_response)
        # eventlet's ``wsgi.input`` ends every body itself (at Content-Length, at the last
        # chunk, or at once when there is neither) but does not say so; without the flag
        # werkzeug reads a chunked body as empty.
        environ["wsgi.input_terminated"] = True
        if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":  # as eventlet
            environ["wsgi.input"] = _ChunkedBodyCap(environ["wsgi.input"], MAX_BODY_BYTES)
        request = Request(environ, shallow=True)
        adapter = self.url_map.bind_to_environ(environ)
        try:
            provider, values = adapter.match()
            if not getattr(provider, "ready", True):
                # One server serves every service of the process, and it listens as soon
                # as the first one has started: a request for one still setting up its
                # dependencies would find them missing, and kill its container.
                response = _refusal(environ, Unavailable(
                    f"{provider.container.service_name} is starting or stopping; try again shortly"))
            else:
                request.path_values = values
                response = provider.handle_request(request)
        except HTTPException as exc:
            response = _refusal(environ, exc)
        return response(environ, start_response)


class _ChunkedBodyCap:
    """A chunked body's ``wsgi.input``: PayloadTooLarge as soon as it goes past the limit.

    A chunked body declares no length, so it can only be refused while it is read; every
    reader (read_json, Open311's forms, the pages' forms) reads through this, and none
    gets a body silently cut short (werkzeug's own ``max_content_length`` cuts it)."""

    def __init__(self, stream, limit: int):
        self._stream = stream
        self._limit = limit
        self._seen = 0

    def read(self, size: int | None = -1) -> bytes:
        return self._counted(self._stream.read(self._allowance(size)))

    def readline(self, size: int | None = -1) -> bytes:
        return self._counted(self._stream.readline(self._allowance(size)))

    def __iter__(self):
        return iter(lambda: self.read(16 * 1024), b"")

    def _allowance(self, size: int | None) -> int:
        left = self._limit + 1 - self._seen  # one byte past the limit tells it is over
        return left if size is None or size < 0 else min(size, left)

    def _counted(self, data: bytes) -> bytes:
        self._seen += len(data)
        if self._seen > self._limit:
            raise PayloadTooLarge(f"body is larger than {self._limit} bytes")
        return data


# URL prefixes whose refusals before any handler runs (a body over the limit, no such
# route) take another shape than Whistle's own: prefix -> renderer, called with the WSGI
# environ and the refusal. Open311's endpoints (services.intake.open311) answer in
# Open311's error shape; the pages (services.web) with a page in the reader's language.
ERROR_SHAPES: dict[str, Any] = {}


def _refusal(environ, exc: Exception) -> Response:
    path = environ.get("PATH_INFO") or ""
    for prefix, render in ERROR_SHAPES.items():
        if path.startswith(prefix):
            return render(environ, exc)
    return error_response(exc)


def _declared_length(environ) -> int | None:
    try:
        return int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


# Credentials and residents' data must never reach a log, and a query string can carry
# them: a resident's link its token, an Open311 client its ``api_key`` (on every
# ``servicerequestupdates`` poll), and an Open311 POST may put any of its fields there
# (the reporter's name, phone, email, the flat). Their values are cut out, whatever the
# name's spelling on the wire (``%74oken``, ``api%5Fkey``: werkzeug decodes names). So are
# Whistle's own fields for a resident (``contact.name``, ``location.address``, a rating's
# ``comment``, a staff ``note`` that may quote them), however a careless client nests
# them in a query (``name``, ``contact.name``, ``contact[name]``): its own request is
# refused, but its line is logged first.
_QUERY_PAIR = re.compile(r"([?&])([^=&\s]*)=([^&\s]*)")
_SECRET_PARAMETERS = frozenset({
    "token", "api_key", "first_name", "last_name", "phone", "email", "description",
    "address_string", "address_id", "device_id", "account_id", "media_url",
    "name", "address", "comment", "note"})
_NAME_PARTS = re.compile(r"[.\[\]]+")


def _redact_pair(match: re.Match) -> str:
    name = unquote_plus(match.group(2))
    last = next((part for part in reversed(_NAME_PARTS.split(name)) if part), "")
    if (name in _SECRET_PARAMETERS or last in _SECRET_PARAMETERS
            or name.startswith("attribute[")):
        return f"{match.group(1)}{match.group(2)}=[redacted]"
    return match.group(0)


def redact_request_line(line: str) -> str:
    """``POST /issues/X/feedback?token=eyJ… HTTP/1.1`` -> ``…?token=[redacted] HTTP/1.1``;
    the same for an Open311 ``api_key`` and the personal fields an Open311 POST may send
    in its query string (``_SECRET_PARAMETERS``)."""
    return _QUERY_PAIR.sub(_redact_pair, line) if "?" in line else line


# eventlet formats the access line itself; these fields, split on a separator no
# request line can hold, become the structured line's fields.
_ACCESS_FIELDS = ("client_ip", "request_line", "status_code", "body_length", "wall_seconds")
_SEP = "\x1f"
ACCESS_LOG_FORMAT = _SEP.join(f"%({name})s" for name in _ACCESS_FIELDS)


class AccessLog:
    """eventlet's server log as structured lines, written without the stdlib hop.

    One ``http_request`` line per request (client, request line, status, bytes,
    milliseconds) instead of eventlet's Apache-style text through ``logging``: the
    fields can be filtered on, and the line costs half as much. Anything else
    eventlet logs (a traceback, a reset connection) keeps its text.
    """

    def __init__(self):
        self._log = get_logger("whistle.http")

    def info(self, msg, *args, **_kwargs):
        parts = msg.split(_SEP)
        if len(parts) != len(_ACCESS_FIELDS):
            self._log.info(msg % args if args else msg)
            return
        client, request, status, length, seconds = parts
        try:
            ms = round(float(seconds) * 1000, 1)
        except ValueError:  # never from eventlet; a log line must not raise anyway
            ms = seconds
        self._log.info("http_request", client=client, request=redact_request_line(request),
                       status=int(status) if status.isdigit() else status,
                       bytes=int(length) if length.isdigit() else length, ms=ms)

    def error(self, msg, *args, **_kwargs):
        self._log.error(msg % args if args else msg)

    def debug(self, msg, *args, **_kwargs):
        self._log.debug(msg % args if args else msg)

    def write(self, msg, *args):
        self.info(msg.rstrip("\n"), *args)


class ProcessWebServer(WebServer):
    """One web server per bind address per process, shared by every container."""

    def bind(self, container):
        address = container.config.get(WEB_SERVER_CONFIG_KEY, "0.0.0.0:8000")
        shared = _servers.get(address)
        if shared is None or shared._stopped:
            shared = super().bind(container)
            shared._address = address
            shared._stopped = False
            shared._url_map = None
            _servers[address] = shared
        container.shared_extensions[self.sharing_key] = shared
        return shared

    def register_provider(self, provider):
        super().register_provider(provider)
        self._url_map = None

    def unregister_provider(self, provider):
        super().unregister_provider(provider)
        self._url_map = None

    def url_map(self):
        if self._url_map is None:
            self._url_map = self.make_url_map()
        return self._url_map

    def get_wsgi_app(self):
        return _LiveWsgiApp(self)

    def start(self):
        """nameko's ``start``, listening without ``SO_REUSEPORT``.

        ``eventlet.listen`` sets it by default, so a second ``whistle up`` on a port in
        use started without a word and took half of its connections. Without it, the
        second one fails with "address already in use"."""
        if not self._starting:
            self._starting = True
            self._sock = eventlet.listen(self.bind_addr, reuse_port=False)
            self._sock.settimeout(None)  # as nameko does (celery/kombu#838)
            self._serv = self.get_wsgi_server(self._sock, self.get_wsgi_app())
            self._gt = self.container.spawn_managed_thread(self.run)

    def get_wsgi_server(self, sock, wsgi_app, protocol=HttpOnlyProtocol, debug=False):
        return wsgi.Server(sock, sock.getsockname(), wsgi_app, protocol=protocol, debug=debug,
                           log=AccessLog(), log_format=ACCESS_LOG_FORMAT,
                           url_length_limit=MAX_REQUEST_LINE)

    def stop(self):
        self._forget()
        if self._gt is not None:
            super().stop()

    def kill(self):
        self._forget()
        if self._sock is not None:
            self._sock.close()

    def _forget(self):
        self._stopped = True
        if _servers.get(self._address) is self:
            del _servers[self._address]


class JsonHttpHandler(HttpRequestHandler):
    """``@http`` whose results and errors are JSON, and never a stack trace."""

    server = ProcessWebServer()
    # Whether its service has set up every dependency: a container starts its
    # extensions only once all of them are set up (``_LiveWsgiApp`` answers 503 before).
    ready = False

    def start(self):
        super().start()
        self.ready = True

    def stop(self):
        self.ready = False
        super().stop()

    def kill(self):
        # nameko kills a container's entrypoints without stopping them, so they stay
        # registered with the process's shared server; its graceful stop, when the
        # other containers then stop, waits for every provider to unregister, for
        # ever: one container's death left `whistle up` hung at "stopping services",
        # deaf to SIGINT and SIGTERM.
        self.ready = False
        self.server.unregister_provider(self)

    def response_from_result(self, result):
        if isinstance(result, Response):
            return result
        if isinstance(result, tuple):
            status, payload = result
            return json_response(payload, status)
        return json_response(result)

    def response_from_exception(self, exc):
        return error_response(exc)

    @cached_property
    def _signature(self) -> inspect.Signature:
        return inspect.signature(getattr(self.container.service_cls, self.method_name))

    @cached_property
    def _plain_parameters(self) -> tuple[str, ...] | None:
        """The method's parameters after ``self`` when each is plain (positional or
        keyword, no default), else None: a call fits those when it fills each once."""
        parameters = list(self._signature.parameters.values())[1:]
        if all(p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in parameters):
            return tuple(p.name for p in parameters)
        return None

    def check_signature(self, args, kwargs):
        # nameko's own check works the signature out again for every request
        # (inspect.getcallargs); the method's signature does not change. A request fills
        # plain parameters, the request then the path's values: counted, not bound.
        plain = self._plain_parameters
        if (plain is not None and len(args) + len(kwargs) == len(plain)
                and all(name in kwargs for name in plain[len(args):])):
            return
        try:
            self._signature.bind(None, *args, **kwargs)
        except TypeError as exc:
            raise IncorrectSignature(str(exc)) from None


http = JsonHttpHandler.decorator


def read_json(request: Request, model: type[M]) -> M:
    """Parse and validate a JSON body, with clear 4xx errors for every way it can be bad."""
    return validate(model, read_json_data(request))


def read_json_data(request: Request) -> Any:
    """:func:`read_json` without the model: the parsed body (400/413 when it cannot be),
    for a handler that must look into it (a rating token) before judging the rest."""
    if request.mimetype != "application/json":
        raise MalformedBody("Content-Type must be application/json")
    try:
        text = read_body_text(request)
    except UnicodeDecodeError:
        raise MalformedBody("body is not valid UTF-8") from None
    return parse_json_body(text)


def has_body(request: Request) -> bool:
    """Whether the request carries a body: a Content-Length above 0, or chunks."""
    return bool(request.content_length) or "chunked" in (
        request.headers.get("Transfer-Encoding") or "").lower()


def read_body_text(request: Request) -> str:
    """The body as text; PayloadTooLarge over the limit, declared or chunked.

    UnicodeDecodeError is the caller's to answer, in its own error shape."""
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"body is larger than {MAX_BODY_BYTES} bytes")
    raw = request.get_data(cache=False)  # a chunked one stops at the limit: _ChunkedBodyCap
    if len(raw) > MAX_BODY_BYTES:  # a stream without that cap (not served by _LiveWsgiApp)
        raise PayloadTooLarge(f"body is larger than {MAX_BODY_BYTES} bytes")
    return raw.decode("utf-8")


def parse_json_body(text: str, repeats_allowed: bool = False) -> Any:
    """A request body's JSON (``{}`` when blank); MalformedBody if it is not JSON, nests
    deeper than MAX_JSON_DEPTH, or (unless ``repeats_allowed``: Open311 judges repeats
    field by field) gives a key twice in one object."""
    try:
        # The standard library's parser: its error positions are the ones we document.
        hook = None if repeats_allowed else _one_value_a_key
        data = json.loads(text, object_pairs_hook=hook) if text.strip() else {}
    except RecursionError:  # deeper than the interpreter's limit, far beyond ours
        raise MalformedBody(_TOO_DEEP) from None
    except ValueError as exc:
        raise MalformedBody(f"body is not valid JSON (line {exc.lineno}, column {exc.colno})"
                            if hasattr(exc, "lineno") else "body is not valid JSON") from None
    # Each level opens a bracket: a text with fewer cannot nest deeper (brackets in
    # strings only add to the count), and is not walked.
    if (text.count("{") + text.count("[") > MAX_JSON_DEPTH
            and _nests_deeper_than(data, MAX_JSON_DEPTH)):
        raise MalformedBody(_TOO_DEEP)
    return data


_TOO_DEEP = f"body is nested too deeply: JSON deeper than {MAX_JSON_DEPTH} levels"


def _one_value_a_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object of the body; one that gives a key twice is refused, naming it. A JSON
    parser keeps the last value in silence: ``{"category": "pipe_leak", …, "category":
    "gas_leak"}`` filed a gas leak."""
    obj = dict(pairs)
    if len(obj) == len(pairs):  # no key given twice (the common case, in C)
        return obj
    seen: set[str] = set()
    for key, _value in pairs:
        if key in seen:
            raise MalformedBody(f'body gives "{key[:64]}" more than once: give it once')
        seen.add(key)
    return obj


def _nests_deeper_than(value: Any, limit: int) -> bool:
    # A loop, not recursion: the value may be as deep as the parser allowed.
    pending = [(value, 1)] if isinstance(value, dict | list) else []
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children
                       if isinstance(child, dict | list))
    return False


def query_parameters(request: Request) -> dict[str, str]:
    """A JSON endpoint's query string, one value a parameter, without ``token`` (it
    carries a resident's link, already judged by the guard: no filter). A parameter
    given twice is a 422 naming it: which of ``?status=open&status=closed`` the caller
    meant is not Whistle's to guess, and taking the first quietly answered another
    question than the one asked."""
    repeated = [key for key, values in request.args.lists()
                if len(values) > 1 and key != TOKEN_QUERY_PARAMETER]
    if repeated:
        raise InvalidPayload(f"invalid request: {', '.join(repeated)}", [
            {"field": key, "type": "repeated", "message": "given more than once; give it once"}
            for key in repeated])
    return {k: v for k, v in request.args.items() if k != TOKEN_QUERY_PARAMETER}


def query_flags(parameters: dict[str, str], names: tuple[str, ...]) -> dict[str, Any]:
    """``parameters`` with each of ``names`` given as ``true`` or ``false`` made a bool: a
    query string is text, and the models take only JSON booleans
    (``shared.contracts.ClientBool``). Any other spelling is a 422 naming the parameter
    (``?triage=yes`` was read as true, ``?triage=0`` as false, by the lax models)."""
    flags = {"true": True, "false": False}
    wrong = [name for name in names if name in parameters and parameters[name] not in flags]
    if wrong:
        raise InvalidPayload(f"invalid request: {', '.join(wrong)}", [
            {"field": name, "type": "bool_type", "message": "must be true or false"}
            for name in wrong])
    return {k: flags[v] if k in names else v for k, v in parameters.items()}


def validate(model: type[M], data: Any, what: str = "request") -> M:
    """Validate into ``model`` or raise InvalidPayload naming every bad field."""
    if isinstance(data, BaseModel):
        data = data.model_dump()
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidPayload.from_validation_error(exc, what) from None


def health_report(service: str, redis_client: Any) -> Response:
    """``GET /health``, open to anyone: up (200) or down (503, Redis unreachable), and the
    services in this process. Nothing else: it is the one endpoint without a token."""
    try:
        redis_client.ping()
        redis_ok = True
    except Exception:
        redis_ok = False
    services = {service}
    for server in _servers.values():
        hosted = {p.container.service_name for p in server._providers}
        if service in hosted:
            services |= hosted
    body = {"status": "up" if redis_ok else "down", "services": sorted(services)}
    return json_response(body, 200 if redis_ok else 503)

"""Configuration keys and the environment they come from.

nameko services read ``self.container.config[KEY]``. ``nameko run --config
config.yaml`` fills it with ``${VAR:default}`` substitution; ``whistle up`` and
the tests build the same dict with :func:`config_from_env`. Either way every
value comes from the environment, and the defaults below are for local
development only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

AMQP_URI = "AMQP_URI"
WEB_SERVER_ADDRESS = "WEB_SERVER_ADDRESS"
REDIS_URL = "REDIS_URL"
KEY_PREFIX = "WHISTLE_KEY_PREFIX"
ENVIRONMENT = "WHISTLE_ENV"
SECRET = "WHISTLE_SECRET"
TOKEN_TTL = "WHISTLE_TOKEN_TTL"
RULES_FILE = "RULES_FILE"
ROUTING_MODEL = "WHISTLE_ROUTING_MODEL"  # a model artefact; empty: the bundled one, else keywords
TRIAGE_THRESHOLD = "WHISTLE_TRIAGE_THRESHOLD"  # empty: the classifier's own; 0: no triage
NOTIFY_CHANNEL = "NOTIFY_CHANNEL"
NOTIFY_WEBHOOK_URL = "NOTIFY_WEBHOOK_URL"
DISPLAY_TZ = "WHISTLE_TZ"
MAX_ATTEMPTS = "WHISTLE_MAX_ATTEMPTS"
RETRY_DELAY_MS = "WHISTLE_RETRY_DELAY_MS"
LOG_FORMAT = "LOG_FORMAT"
NOTIFY_WEBHOOK_SECRET = "NOTIFY_WEBHOOK_SECRET"
NOTIFY_MAX_ATTEMPTS = "NOTIFY_MAX_ATTEMPTS"
# Sends a notify process has on the wire at once through one direct channel (webhook,
# email): the rest wait through the delay queue instead of holding workers.
NOTIFY_MAX_DIRECT_SENDS = "NOTIFY_MAX_DIRECT_SENDS"
SMTP_HOST = "SMTP_HOST"
SMTP_PORT = "SMTP_PORT"
SMTP_FROM = "SMTP_FROM"
SMTP_USER = "SMTP_USER"
SMTP_PASSWORD = "SMTP_PASSWORD"
SMTP_STARTTLS = "SMTP_STARTTLS"
PUBLIC_URL = "WHISTLE_PUBLIC_URL"
RATING_WINDOW_S = "WHISTLE_RATING_WINDOW_S"
RABBIT_API_URL = "WHISTLE_RABBIT_API"  # RabbitMQ management API, for `whistle status` and `dlq`
DATABASE_URL = "WHISTLE_DATABASE_URL"  # PostgreSQL: the archive (docs/archive.md)
HOT_RETENTION = "WHISTLE_HOT_RETENTION"  # how long a closed issue stays in Redis: 1d, 12h, 90m
ARCHIVE_INTERVAL_S = "WHISTLE_ARCHIVE_INTERVAL_S"  # how often intake's archiver looks
MAX_WORKERS = "max_workers"
QUEUE_TYPE = "WHISTLE_QUEUE_TYPE"  # classic or quorum: shared.topology, docs/cluster.md
# Staff tokens, rate limits and submission (docs/security.md).
TOKEN_MAX_AGE = "WHISTLE_TOKEN_MAX_AGE"  # how long a refresh chain may go on, seconds
ANONYMOUS_SUBMIT = "WHISTLE_ANONYMOUS_SUBMIT"  # may callers without a token submit?
RATE_WINDOW_S = "WHISTLE_RATE_WINDOW_S"
RATE_SUBMIT = "WHISTLE_RATE_SUBMIT"  # submissions per staff member per window
RATE_SUBMIT_ANONYMOUS = "WHISTLE_RATE_SUBMIT_ANONYMOUS"  # per client address per window
RATE_READ = "WHISTLE_RATE_READ"  # other requests per client per window
AUDIT_MAX_ENTRIES = "WHISTLE_AUDIT_MAX_ENTRIES"
OPEN311_PUBLIC_READ = "OPEN311_PUBLIC_READ"  # "false": reading requests needs an API key
OPEN311_DEFAULT_COMMUNITY = "OPEN311_DEFAULT_COMMUNITY"  # for posts without attribute[community]
OPEN311_POST_LIMIT = "OPEN311_POST_LIMIT"  # POSTs per client per minute

# Development defaults. DEV_SECRET is deliberately named and worded so that it
# is obvious in any log or config dump; production refuses it (see check_production).
DEV_SECRET = "dev-only-insecure-secret-do-not-use-in-production"
DEV_AMQP_URI = "amqp://guest:guest@127.0.0.1:5672/"
# Development default: the machine's PostgreSQL with trust authentication, as
# scripts/infra.sh sets it up. Production names a user with a password.
DEV_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/whistle"

DEFAULTS: dict[str, Any] = {
    AMQP_URI: DEV_AMQP_URI,
    WEB_SERVER_ADDRESS: "127.0.0.1:8000",
    REDIS_URL: "redis://127.0.0.1:6379/0",
    KEY_PREFIX: "whistle",
    ENVIRONMENT: "development",
    SECRET: DEV_SECRET,
    # A shift (8 h) plus handover and overtime: see shared/auth.py.
    TOKEN_TTL: 10 * 3600,
    TOKEN_MAX_AGE: 24 * 3600,
    ANONYMOUS_SUBMIT: "true",
    RATE_WINDOW_S: 60,
    # 0 turns a limit off. Per window: a desk worker submits a few a minute, a hotline
    # gateway more; a resident's phone a handful; the desk board polls every 2 s.
    RATE_SUBMIT: 300,
    RATE_SUBMIT_ANONYMOUS: 10,
    RATE_READ: 600,
    AUDIT_MAX_ENTRIES: 1_000_000,
    RULES_FILE: "",
    ROUTING_MODEL: "",
    TRIAGE_THRESHOLD: "",
    NOTIFY_CHANNEL: "desk",
    NOTIFY_WEBHOOK_URL: "",
    DISPLAY_TZ: "Asia/Shanghai",
    MAX_ATTEMPTS: 5,
    RETRY_DELAY_MS: 1000,
    QUEUE_TYPE: "classic",
    LOG_FORMAT: "json",
    # Workers per service, and the prefetch of each of its consumers. A worker spends
    # most of its time waiting for Redis and the broker; on a busy host each wait is
    # several milliseconds, and with nameko's 10 a service queued work while its CPU
    # idled (docs/benchmarks.md, session 5).
    MAX_WORKERS: 32,
    NOTIFY_WEBHOOK_SECRET: "",  # defaults to WHISTLE_SECRET when empty
    NOTIFY_MAX_ATTEMPTS: 4,  # per message; must stay below WHISTLE_MAX_ATTEMPTS
    # Per channel and process: with both direct channels slow, 16 of the 32 workers
    # send and 16 stay free for everyone else's messages (docs/architecture.md).
    NOTIFY_MAX_DIRECT_SENDS: 8,
    SMTP_HOST: "",  # email channel disabled when empty
    SMTP_PORT: 25,
    SMTP_FROM: "whistle@localhost",
    SMTP_USER: "",
    SMTP_PASSWORD: "",
    SMTP_STARTTLS: "false",
    PUBLIC_URL: "http://127.0.0.1:8000",
    RATING_WINDOW_S: 7 * 24 * 3600,
    # The vhost is AMQP_URI's; only the management API's address and account are here.
    RABBIT_API_URL: "http://guest:guest@127.0.0.1:15672",
    OPEN311_PUBLIC_READ: "true",
    OPEN311_DEFAULT_COMMUNITY: "",
    OPEN311_POST_LIMIT: 30,
    DATABASE_URL: DEV_DATABASE_URL,
    HOT_RETENTION: "1d",
    ARCHIVE_INTERVAL_S: 60,
}

_INTEGER_KEYS = {TOKEN_TTL, MAX_ATTEMPTS, RETRY_DELAY_MS, MAX_WORKERS, NOTIFY_MAX_ATTEMPTS,
                 NOTIFY_MAX_DIRECT_SENDS,
                 SMTP_PORT, RATING_WINDOW_S, TOKEN_MAX_AGE, RATE_WINDOW_S, RATE_SUBMIT,
                 RATE_SUBMIT_ANONYMOUS, RATE_READ, AUDIT_MAX_ENTRIES,
                 OPEN311_POST_LIMIT, ARCHIVE_INTERVAL_S}
# Integer keys for which 0 means nothing works (no worker, a token dead on issue, a pass
# every tick, a retry at once and forever while Redis is down, an audit log trimmed to
# nothing); the others may be 0 (a rate limit of 0 is no limit). None may be negative.
_AT_LEAST_ONE_KEYS = {TOKEN_TTL, TOKEN_MAX_AGE, MAX_ATTEMPTS, MAX_WORKERS, RATE_WINDOW_S,
                      RATING_WINDOW_S, ARCHIVE_INTERVAL_S, SMTP_PORT, NOTIFY_MAX_ATTEMPTS,
                      NOTIFY_MAX_DIRECT_SENDS,
                      RETRY_DELAY_MS, AUDIT_MAX_ENTRIES}
_PORT_KEYS = {SMTP_PORT}
_MAX_TOKEN_TTL_S = 7 * 24 * 3600  # shared.auth.MAX_TTL_S (auth imports no config)
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
# Read as yes or no: a typo must not quietly turn anonymous submission off, or Open311's
# reads public.
_BOOLEAN_KEYS = {ANONYMOUS_SUBMIT, SMTP_STARTTLS, OPEN311_PUBLIC_READ}
# WHISTLE_ENV is a choice too: a typo ("prodution", "staging") must not quietly run with
# the development defaults (the dev secret, guest/guest) that production refuses.
_CHOICES = {LOG_FORMAT: ("json", "console"), NOTIFY_CHANNEL: ("desk", "webhook", "email"),
            ENVIRONMENT: ("development", "dev", "production", "prod")}


class ConfigurationError(RuntimeError):
    """Whistle refuses to start with this configuration."""


def _env_name(key: str) -> str:
    """The environment variable a config key comes from (nameko's ``max_workers`` is the
    one key not named like its variable)."""
    return "MAX_WORKERS" if key == MAX_WORKERS else key


def config_from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    """The service config dict, from environment variables named like the keys."""
    environ = os.environ if environ is None else environ
    config = dict(DEFAULTS)
    for key in DEFAULTS:
        env_name = _env_name(key)
        if environ.get(env_name):
            config[key] = environ[env_name]
    config.update(overrides)
    return normalise(config)


def normalise(config: dict[str, Any]) -> dict[str, Any]:
    """Coerce integer keys (``nameko run`` substitutes strings), refuse malformed values
    with one line naming the variable, and check production. Only the keys present are
    checked; running it again changes nothing."""
    for key in _INTEGER_KEYS & config.keys():
        try:
            config[key] = int(config[key])
        except (TypeError, ValueError):
            raise ConfigurationError(f"{_env_name(key)} must be an integer, "
                                     f"not {config[key]!r}") from None
        least = 1 if key in _AT_LEAST_ONE_KEYS else 0
        if config[key] < least:
            raise ConfigurationError(f"{_env_name(key)} must be at least {least}, "
                                     f"not {config[key]}")
        if key in _PORT_KEYS and config[key] > 65535:
            raise ConfigurationError(f"{_env_name(key)} must be a port from 1 to 65535, "
                                     f"not {config[key]}")
        # no token is signed for longer (shared.auth.MAX_TTL_S): `whistle token` took it
        # and then blamed its --ttl, not given
        if key == TOKEN_TTL and config[key] > _MAX_TOKEN_TTL_S:
            raise ConfigurationError(f"{TOKEN_TTL} must be at most {_MAX_TOKEN_TTL_S} "
                                     f"(7 days), not {config[key]}")
    if NOTIFY_MAX_ATTEMPTS in config and MAX_ATTEMPTS in config:
        check_attempts(config)
    for key in _BOOLEAN_KEYS & config.keys():
        if str(config[key]).strip().lower() not in ("", *TRUE_WORDS, *FALSE_WORDS):
            raise ConfigurationError(f"{key} must be true or false, not {config[key]!r}")
    for key, choices in _CHOICES.items():
        if config.get(key) and str(config[key]).strip().lower() not in choices:
            raise ConfigurationError(f"{key} must be {' or '.join(choices)}, "
                                     f"not {config[key]!r}")
    if config.get(DISPLAY_TZ):
        check_time_zone(config[DISPLAY_TZ])
    if config.get(DATABASE_URL):
        check_database_url(config[DATABASE_URL])
    if config.get(REDIS_URL):
        scheme = urlsplit(str(config[REDIS_URL])).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(f"{REDIS_URL} must be a redis://, rediss:// or unix:// "
                                     "URL (like redis://127.0.0.1:6379/0)")
    if config.get(AMQP_URI):
        check_amqp_uri(config[AMQP_URI])
    if config.get(RABBIT_API_URL):
        parts = urlsplit(str(config[RABBIT_API_URL]).strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # the value is not repeated: it holds the management API's password
            raise ConfigurationError(f"{RABBIT_API_URL} must be an http:// or https:// URL "
                                     "(like http://USER:PASSWORD@127.0.0.1:15672)")
    if config.get(PUBLIC_URL):
        parts = urlsplit(str(config[PUBLIC_URL]).strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"{PUBLIC_URL} must be an http:// or https:// address "
                                     f"(residents' links start with it), not "
                                     f"{config[PUBLIC_URL]!r}")
    if config.get(TRIAGE_THRESHOLD):
        triage_threshold(config)
    if config.get(QUEUE_TYPE):
        config[QUEUE_TYPE] = str(config[QUEUE_TYPE]).strip().lower()
        if config[QUEUE_TYPE] not in ("classic", "quorum"):
            raise ConfigurationError(f"{QUEUE_TYPE} must be classic or quorum, "
                                     f"not {config[QUEUE_TYPE]!r}")
    if HOT_RETENTION in config:
        try:
            duration_s(config[HOT_RETENTION])  # refuse a malformed one at start-up
        except ConfigurationError as exc:
            raise ConfigurationError(f"{HOT_RETENTION}: {exc}") from None
    if config.get(WEB_SERVER_ADDRESS):
        try:
            config[WEB_SERVER_ADDRESS] = web_address(config[WEB_SERVER_ADDRESS])
        except ConfigurationError as exc:
            raise ConfigurationError(f"{WEB_SERVER_ADDRESS}: {exc}") from None
    check_production(config)
    return config


def check_attempts(config: Mapping[str, Any]) -> int:
    """``NOTIFY_MAX_ATTEMPTS``, refused unless the subscriber retries longer.

    A message is marked failed at its ``NOTIFY_MAX_ATTEMPTS``-th refusal; if the
    event were dead-lettered first (``WHISTLE_MAX_ATTEMPTS``), the message would stay
    queued forever instead of showing the desk it failed.
    """
    notify, event = int(get(config, NOTIFY_MAX_ATTEMPTS)), int(get(config, MAX_ATTEMPTS))
    if not 1 <= notify < event:
        raise ConfigurationError(
            f"{NOTIFY_MAX_ATTEMPTS} ({notify}) must be at least 1 and below "
            f"{MAX_ATTEMPTS} ({event}), or events would be dead-lettered before notify "
            "marks their messages failed")
    return notify


def check_time_zone(name: Any) -> None:
    """``WHISTLE_TZ`` must name a zone of the IANA database (``Asia/Shanghai``, ``UTC``)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(str(name).strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"{DISPLAY_TZ} must name a time zone (like Asia/Shanghai "
                                 f"or UTC), not {name!r}") from None


def check_database_url(url: Any) -> None:
    """``WHISTLE_DATABASE_URL`` must be a PostgreSQL URL with a numeric port, if any. The
    value is not repeated: it may hold a password."""
    parts = urlsplit(str(url).strip())
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(f"{DATABASE_URL} must be a postgresql:// URL (like "
                                 "postgresql://USER:PASSWORD@HOST:5432/whistle)")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked for it
    except ValueError:
        raise ConfigurationError(f"{DATABASE_URL}: the port must be a number from 1 to "
                                 "65535") from None


def check_amqp_uri(uri: Any) -> None:
    """Every node ``AMQP_URI`` lists must be an ``amqp://`` or ``amqps://`` URL: kombu takes
    anything else for the name of a transport it does not have, and fails with a traceback
    deep in a service or the CLI. The value is not repeated: it holds the broker's password."""
    nodes = broker_uris(str(uri))
    if not nodes or any(urlsplit(node).scheme not in ("amqp", "amqps", "pyamqp")
                        for node in nodes):
        raise ConfigurationError(f"{AMQP_URI} must be an amqp:// or amqps:// URL, or several "
                                 "separated by ';' (like amqp://USER:PASSWORD@127.0.0.1:5672/)")


def web_address(value: Any) -> str:
    """``host:port`` to serve HTTP on. A bare port is on loopback, like the default: given
    to nameko as is it would listen on every interface, and the CLI would look for the
    API at ``http://8126``. Anything without a port from 1 to 65535 is refused."""
    text = str(value).strip()
    host, colon, port = text.rpartition(":")
    if not colon:
        host = "127.0.0.1"
    # nameko's server takes no IPv6 literal ([::1]:8000): refused here, in one line
    if (not port.isdigit() or not 0 < int(port) < 65536 or not host
            or any(c in host for c in "[]:/")):
        raise ConfigurationError(f"{value!r} is not [host:]port (like 127.0.0.1:8000, or 8000)")
    return f"{host}:{int(port)}"


def broker_uris(amqp_uri: str) -> list[str]:
    """The nodes ``AMQP_URI`` lists: one, or several separated by ``;`` (kombu's failover
    syntax, ``amqp://a:5672/;amqp://b:5672/``), each tried in turn when one is down."""
    return [part.strip() for part in amqp_uri.split(";") if part.strip()]


_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(value: Any) -> float:
    """``"1d"``, ``"12h"``, ``"90m"``, ``"30s"`` or a number of seconds, in seconds."""
    text = str(value).strip().lower()
    try:
        if text and text[-1] in _DURATION:
            seconds = float(text[:-1]) * _DURATION[text[-1]]
        else:
            seconds = float(text)
    except ValueError:
        raise ConfigurationError(f"{value!r} is not a duration (like 1d, 12h, 90m, 30s)") from None
    if seconds < 0:
        raise ConfigurationError(f"{value!r}: a duration cannot be negative")
    return seconds


def get(config: Mapping[str, Any], key: str) -> Any:
    """Read a key, falling back to the development default."""
    value = config.get(key)
    return DEFAULTS[key] if value in (None, "") else value


def triage_threshold(config: Mapping[str, Any]) -> float | None:
    """``WHISTLE_TRIAGE_THRESHOLD`` as a probability, or None (the classifier's own)."""
    value = str(get(config, TRIAGE_THRESHOLD)).strip()
    if not value:
        return None
    try:
        threshold = float(value)
    except ValueError:
        raise ConfigurationError(f"{TRIAGE_THRESHOLD}={value!r} is not a number") from None
    if not 0 <= threshold <= 1:
        raise ConfigurationError(f"{TRIAGE_THRESHOLD}={value!r} must be between 0 and 1")
    return threshold


def check_production(config: Mapping[str, Any]) -> None:
    """Refuse development defaults when ``WHISTLE_ENV=production``."""
    if str(get(config, ENVIRONMENT)).strip().lower() not in ("production", "prod"):
        return
    problems = []
    if get(config, SECRET) == DEV_SECRET or len(str(get(config, SECRET))) < 32:
        problems.append(f"{SECRET} must be set to a random value of at least 32 characters")
    # kombu connects as guest/guest when the URI names no user: parse, don't grep. A
    # cluster's URI lists its nodes (kombu's failover syntax): every one is checked.
    users = [urlsplit(uri).username for uri in broker_uris(str(get(config, AMQP_URI)))]
    if not all(users) or "guest" in users:
        problems.append(f"{AMQP_URI} must not use the guest account (name another broker user)")
    if get(config, DATABASE_URL) == DEV_DATABASE_URL:
        problems.append(f"{DATABASE_URL} must name the production database (not the "
                        "development default)")
    if problems:
        raise ConfigurationError("refusing to start in production: " + "; ".join(problems))

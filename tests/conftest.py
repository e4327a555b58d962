"""Test fixtures shared by every layer of the pyramid.

nameko's pytest plugin no longer monkey-patches since 2.14, and Whistle's code
expects a patched world (as under ``nameko run`` / ``whistle up``): patch
before anything else is imported.
"""

import os
import warnings

# Selenium (the browser tests) brings trio, which registers a Hypothesis plugin that
# cannot import under eventlet's green sockets; Whistle's tests use no Hypothesis plugin.
os.environ.setdefault("HYPOTHESIS_NO_PLUGINS", "1")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import eventlet

eventlet.monkey_patch()

import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402
import redis  # noqa: E402

from shared import config as cfg  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.fixture(autouse=True)
def signal_handlers_kept():
    """This process's SIGINT, SIGTERM and SIGHUP handlers as they were before each test.

    A command run in-process (``whistle tail`` through click's runner) sets its own, and
    left so, a Ctrl-C only asked a tail that had ended to stop: pytest, and `make test`,
    ran on to the end."""
    handlers = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}
    yield
    for signum, handler in handlers.items():
        if signal.getsignal(signum) is not handler:
            signal.signal(signum, handler)


PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


def create_database(name: str, template: str | None = None) -> str:
    """A new database on the machine's PostgreSQL; its URL."""
    import psycopg

    import shared.archive  # noqa: F401 - psycopg's eventlet-friendly wait, before psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return f"{PG_SERVER}/{name}"


def drop_database(name: str) -> None:
    import psycopg

    from shared.store import _archive_users, _archives

    _archive_users.pop(f"{PG_SERVER}/{name}", None)
    archive = _archives.pop(f"{PG_SERVER}/{name}", None)  # the services' pool, if any
    if archive is not None:
        archive.close()

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def migrated_template():
    """A throwaway database with the archive's schema, for this session's tests."""
    from shared.archive import upgrade

    name = f"whistle_test_{uuid.uuid4().hex[:12]}"
    upgrade(create_database(name))
    yield name
    drop_database(name)


@pytest.fixture(scope="session")
def database_url(migrated_template):
    """The session's database, shared by services that never archive (retention 1 d)."""
    name = f"{migrated_template}_s"
    url = create_database(name, template=migrated_template)
    yield url
    drop_database(name)


@pytest.fixture
def fresh_database_url(migrated_template):
    """A migrated database of this test's own: for tests that archive (issue ids repeat
    across tests, each Redis prefix counting from 0001)."""
    name = f"{migrated_template}_{uuid.uuid4().hex[:8]}"
    url = create_database(name, template=migrated_template)
    yield url
    drop_database(name)

# The suite's routing expectations (categories, agencies, triage) are written against the
# rules' keywords, and must not move whenever the bundled model is retrained: routing
# classifies with the keywords here, in this process and in the processes tests start
# (they inherit the environment), unless a test names a model (the learned router's own
# tests: tests/unit/test_routing_learned.py, tests/integration/test_routing_model.py).
os.environ.setdefault(cfg.ROUTING_MODEL, "keywords")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def redis_prefix():
    """A key prefix no other test uses; every key under it is deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}:*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def whistle_config(rabbit_config, redis_prefix, database_url):
    """Service config on a throwaway RabbitMQ vhost and Redis prefix, with fast retries."""
    return cfg.config_from_env(
        {},
        **{
            cfg.AMQP_URI: rabbit_config["AMQP_URI"],
            cfg.REDIS_URL: REDIS_URL,
            cfg.KEY_PREFIX: redis_prefix,
            cfg.DATABASE_URL: database_url,
            cfg.WEB_SERVER_ADDRESS: f"127.0.0.1:{free_port()}",
            cfg.RETRY_DELAY_MS: 50,
            cfg.MAX_ATTEMPTS: 4,
            cfg.NOTIFY_MAX_ATTEMPTS: 3,  # notify gives up (failed, visible) before dead-lettering
            cfg.LOG_FORMAT: "console",
            cfg.ROUTING_MODEL: os.environ[cfg.ROUTING_MODEL],
        },
    )

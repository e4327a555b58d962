"""The operators' commands' errors: one line naming the bad option, a non-zero exit
(2 for usage), never a traceback; the broker is an address nobody listens on."""

import pytest

from shared import config as cfg
from tests.support.cli import one_error_line, run


def test_tail_with_the_broker_out_of_reach_says_so_in_one_line():
    result = run("tail", env={"AMQP_URI": "amqp://guest:guest@127.0.0.1:1/"})
    assert result.exit_code == 1
    assert one_error_line(result).startswith("Error: cannot reach RabbitMQ at 127.0.0.1:1")


@pytest.mark.parametrize(("args", "named", "says"), [
    (("--issue", "WH-2026121-0001"), "'--issue'", "they look like WH-20261121-0001"),
    (("--agency", "powr"), "'--agency'", "unknown agency 'powr'; known: desk, drainage,"),
    (("--service", "rooting"), "'--service'", "'rooting' is not one of 'intake', 'routing'"),
])
def test_tail_refuses_a_filter_that_could_never_match_before_the_broker(args, named, says):
    # a mistyped filter matched nothing: the tail sat silent, like a quiet system
    result = run("tail", *args, env={"AMQP_URI": "amqp://guest:guest@127.0.0.1:1/"})
    assert result.exit_code == 2
    line = one_error_line(result)
    assert line.startswith(f"Error: Invalid value for {named}: ") and says in line


def test_archive_refuses_a_retention_that_is_not_a_duration():
    result = run("archive", "--retention", "bogus")
    assert result.exit_code == 2
    assert "'--retention'" in one_error_line(result) and "bogus" in result.output


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_audit_refuses_a_limit_below_one_before_reading_redis(limit):
    result = run("audit", "--limit", limit, env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.exit_code == 2 and "'--limit'" in one_error_line(result)


NO_REDIS = {"REDIS_URL": "redis://127.0.0.1:1/0"}  # every refusal below comes before Redis


@pytest.mark.parametrize(("args", "named", "says"), [
    (("token", "power", "--community", "缤泰社区"), "'--community'",
     "only desk tokens are scoped to communities, not power's"),
    (("token", "power", "--ttl", "0"), "'--ttl'", "between 1 s and 604800 s"),
    (("token", "desk", "--staff", ""), "'--staff'", "a staff id is needed"),
    (("token", "desk", "--community", " "), "'--community'", "a community has a name"),
    (("token", "revoke", "--staff", "power"), "'--staff'", "'power' is not AGENCY:STAFF_ID"),
    # a typo would revoke nobody and say it had: refused before Redis, with the known ones
    (("token", "revoke", "--staff", "powr:li-09"), "'--staff'",
     "unknown agency 'powr'; known: desk, drainage, gas, heating, housing_admin,"),
    (("up", "--services", "intake,fax"), "'--services'", "unknown service(s): fax; known:"),
    (("up", "--services", " , "), "'--services'", "no service; known: intake, routing,"),
    (("rules", "check", "/nonexistent/rules.yaml"), "'PATH'", "does not exist"),
    (("privacy", "erase", "13812345678x"), "'ISSUE_ID'", "they look like WH-20261121-0001"),
    # no request is made: nothing listens on port 1, and a path never carries it
    (("trace", "x/../stats", "--url", "127.0.0.1:1"), "'ISSUE_ID'", "'x/../stats' is not an issue id"),
    (("rating-link", "resend", "WH-1", "--url", "127.0.0.1:1"), "'ISSUE_ID'", "is not an issue id"),
    (("open311", "key", "add", "bad name"), "'NAME'", "1-64 letters, digits"),
    # as `add` refuses it: it was looked up, and "no client" (exit 1) said it was not found
    (("open311", "key", "revoke", "bad name"), "'NAME'", "1-64 letters, digits"),
    (("archive", "--batch", "0"), "'--batch'", "0 is not in the range"),
    (("archive", "--lease", "0"), "'--lease'", "0 is not in the range"),
    (("archive", "--every", "0"), "'--every'", "0.0 is not in the range"),
    (("routing", "reload", "--timeout", "0"), "'--timeout'", "0.0 is not in the range"),
])
def test_a_bad_value_is_a_usage_error_naming_its_option(args, named, says):
    result = run(*args, env=NO_REDIS)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert line.startswith(f"Error: Invalid value for {named}: ") and says in line


@pytest.mark.parametrize(("text", "says"), [
    # what to give, in plain words: pydantic's own ("String should have at least 1
    # character") name its types, not what to type
    ("", "Error: TEXT: is empty: give at least 1 character"),
    ("x" * 4001, "Error: TEXT: too long: give at most 4000 characters"),
    ("漏水\x07", "Error: TEXT: must not contain control characters"),
])
def test_route_says_what_is_wrong_with_the_text(text, says):
    result = run("route", text)
    assert result.exit_code == 2 and one_error_line(result) == says


def test_routing_reload_with_the_broker_out_of_reach_names_it_and_why():
    result = run("routing", "reload", "--timeout", "5",
                 env={"AMQP_URI": "amqp://guest:guest@127.0.0.1:1/"})
    assert result.exit_code == 2
    assert one_error_line(result) == ("whistle routing reload: could not reach routing at "
                                      "127.0.0.1:1 (Connection refused)")


@pytest.mark.parametrize("args", [
    ("audit",), ("token", "revoke", "--staff", "power:li-09"), ("open311", "key", "list"),
    ("routing", "corrections"), ("privacy", "erase", "WH-20261121-0001"),
    ("archive", "--retention", "0"),
])
def test_redis_out_of_reach_is_one_line_naming_where_and_why(args, database_url):
    # A migrated database of the session's own: `privacy erase` and `archive` check the
    # schema before Redis, and the machine's `whistle` database may be behind this code.
    result = run(*args, env={**NO_REDIS, cfg.DATABASE_URL: database_url})
    assert result.exit_code == 1  # a backend out of reach, not a usage error
    assert one_error_line(result) == "Error: cannot reach Redis at 127.0.0.1:1/0 (Connection refused)"


def test_queues_migrate_without_a_type_says_so_in_one_line_before_the_broker():
    # click listed the choices on lines of their own, after "Choose from:"
    result = run("queues", "migrate", env={"AMQP_URI": "amqp://guest:guest@127.0.0.1:1/"})
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == "Error: Missing option '--to': classic or quorum"
    one_error_line(result)


def test_queues_migrate_with_the_broker_out_of_reach_names_where_and_why():
    result = run("queues", "migrate", "--to", "quorum",
                 env={"AMQP_URI": "amqp://guest:guest@127.0.0.1:1/"})
    assert result.exit_code == 1
    assert one_error_line(result) == "Error: cannot reach RabbitMQ at 127.0.0.1:1 (Connection refused)"


@pytest.mark.parametrize(("env", "says"), [
    ({"MAX_WORKERS": "x"}, "Error: MAX_WORKERS must be an integer, not 'x'"),
    ({"WHISTLE_QUEUE_TYPE": "fast"}, "Error: WHISTLE_QUEUE_TYPE must be classic or quorum, not 'fast'"),
    ({"WHISTLE_HOT_RETENTION": "soon"},
     "Error: WHISTLE_HOT_RETENTION: 'soon' is not a duration (like 1d, 12h, 90m, 30s)"),
    ({"WEB_SERVER_ADDRESS": "localhost"},
     "Error: WEB_SERVER_ADDRESS: 'localhost' is not [host:]port (like 127.0.0.1:8000, or 8000)"),
    # These were taken, and failed later with a traceback (a service's start-up, yoyo's or
    # psycopg's parser) or not at all (a typo read as "no", no worker at all).
    ({"WHISTLE_DATABASE_URL": "whistle-db"}, "Error: WHISTLE_DATABASE_URL must be a "
     "postgresql:// URL (like postgresql://USER:PASSWORD@HOST:5432/whistle)"),
    ({"WHISTLE_DATABASE_URL": "postgresql://whistle:hunter2@db:543x/whistle"},
     "Error: WHISTLE_DATABASE_URL: the port must be a number from 1 to 65535"),
    ({"REDIS_URL": "127.0.0.1:6379"}, "Error: REDIS_URL must be a redis://, rediss:// or "
     "unix:// URL (like redis://127.0.0.1:6379/0)"),
    ({"LOG_FORMAT": "text"}, "Error: LOG_FORMAT must be json or console, not 'text'"),
    ({"NOTIFY_CHANNEL": "sms"}, "Error: NOTIFY_CHANNEL must be desk or webhook or email, "
     "not 'sms'"),
    ({"WHISTLE_ANONYMOUS_SUBMIT": "flase"},
     "Error: WHISTLE_ANONYMOUS_SUBMIT must be true or false, not 'flase'"),
    ({"OPEN311_PUBLIC_READ": "private"},
     "Error: OPEN311_PUBLIC_READ must be true or false, not 'private'"),
    ({"MAX_WORKERS": "0"}, "Error: MAX_WORKERS must be at least 1, not 0"),
    ({"WHISTLE_ARCHIVE_INTERVAL_S": "-5"},
     "Error: WHISTLE_ARCHIVE_INTERVAL_S must be at least 1, not -5"),
    ({"WHISTLE_RATE_READ": "-1"}, "Error: WHISTLE_RATE_READ must be at least 0, not -1"),
    ({"NOTIFY_MAX_ATTEMPTS": "9"}, "Error: NOTIFY_MAX_ATTEMPTS (9) must be at least 1 and "
     "below WHISTLE_MAX_ATTEMPTS (5), or events would be dead-lettered before notify marks "
     "their messages failed"),
    ({"WHISTLE_TRIAGE_THRESHOLD": "90%"},
     "Error: WHISTLE_TRIAGE_THRESHOLD='90%' is not a number"),
    ({"WHISTLE_PUBLIC_URL": "whistle.example.org"}, "Error: WHISTLE_PUBLIC_URL must be an "
     "http:// or https:// address (residents' links start with it), not 'whistle.example.org'"),    # These were taken too: `whistle tail` then failed with kombu's traceback, `status`
    # and `dlq` said the management API was unreachable "at localhost", a retry delay of
    # 0 retried at once and forever while Redis was down, an email never left.
    ({"AMQP_URI": "http://hunter2@mq:5672/"}, "Error: AMQP_URI must be an amqp:// or "
     "amqps:// URL, or several separated by ';' (like amqp://USER:PASSWORD@127.0.0.1:5672/)"),
    ({"AMQP_URI": "amqp://w:hunter2@mq1:5672/;mq2:5672"}, "Error: AMQP_URI must be an "
     "amqp:// or amqps:// URL, or several separated by ';' (like "
     "amqp://USER:PASSWORD@127.0.0.1:5672/)"),
    ({"WHISTLE_RABBIT_API": "guest:hunter2@127.0.0.1:15672"}, "Error: WHISTLE_RABBIT_API "
     "must be an http:// or https:// URL (like http://USER:PASSWORD@127.0.0.1:15672)"),
    ({"WHISTLE_RETRY_DELAY_MS": "0"}, "Error: WHISTLE_RETRY_DELAY_MS must be at least 1, not 0"),
    ({"WHISTLE_AUDIT_MAX_ENTRIES": "0"},
     "Error: WHISTLE_AUDIT_MAX_ENTRIES must be at least 1, not 0"),
    ({"SMTP_PORT": "65536"}, "Error: SMTP_PORT must be a port from 1 to 65535, not 65536"),
    # taken, and then `whistle token desk` said "Invalid value for '--ttl'", not given
    ({"WHISTLE_TOKEN_TTL": "604801"},
     "Error: WHISTLE_TOKEN_TTL must be at most 604800 (7 days), not 604801"),
])
@pytest.mark.parametrize("args", [("token", "desk"), ("stats",), ("audit",), ("db", "status"),
                                  ("up",)])
def test_a_variable_the_config_refuses_is_one_line_naming_it_in_any_command(env, says, args):
    result = run(*args, env={**NO_REDIS, **env})
    assert result.exit_code == 1 and one_error_line(result) == says
    assert "hunter2" not in result.output  # a database URL's password is never repeated


# `stats` and `route` read it first: they refused it as a usage error of their own (exit 2,
# "WHISTLE_TZ='Beijing' is not a known time zone")
@pytest.mark.parametrize("args", [("token", "desk"), ("audit",), ("db", "status"), ("up",),
                                  ("stats", "--url", "127.0.0.1:1"), ("route", "漏水")])
def test_a_time_zone_that_does_not_exist_is_one_line_naming_it(args):
    result = run(*args, env={**NO_REDIS, "WHISTLE_TZ": "Beijing"})
    assert result.exit_code == 1 and one_error_line(result) == (
        "Error: WHISTLE_TZ must name a time zone (like Asia/Shanghai or UTC), not 'Beijing'")


@pytest.mark.parametrize("address", ["foo", ":8000", "0", "70000", "[::1]:8000"])
def test_up_refuses_an_address_that_is_not_host_and_port(address):
    result = run("up", "--address", address)
    assert result.exit_code == 2
    assert one_error_line(result) == (f"Error: Invalid value for '--address': {address!r} is "
                                      "not [host:]port (like 127.0.0.1:8000, or 8000)")


def test_up_gives_up_on_the_broker_saying_where_and_why():
    from whistle.runner import wait_for_broker

    with pytest.raises(SystemExit) as stopped:
        wait_for_broker("amqp://guest:guest@127.0.0.1:1/", timeout_s=0)
    assert str(stopped.value) == ("whistle: cannot reach RabbitMQ at 127.0.0.1:1/ "
                                  "(Connection refused) after 0 s")


# Nothing listens here, so a command that wrongly went ahead would reach nobody (never the
# broker's default vhost): every refusal below must come before any backend.
NOWHERE = {**NO_REDIS, "AMQP_URI": "amqp://guest:guest@127.0.0.1:1/",
           "WHISTLE_RABBIT_API": "http://guest:guest@127.0.0.1:1"}


@pytest.mark.parametrize(("env", "says"), [
    ({"MAX_WORKERS": "x"}, "Error: MAX_WORKERS must be an integer, not 'x'"),
    ({"REDIS_URL": "127.0.0.1:6379"}, "Error: REDIS_URL must be a redis://, rediss:// or "
     "unix:// URL (like redis://127.0.0.1:6379/0)"),
    ({"AMQP_URI": "http://hunter2@mq:5672/"}, "Error: AMQP_URI must be an amqp:// or "
     "amqps:// URL, or several separated by ';' (like amqp://USER:PASSWORD@127.0.0.1:5672/)"),
    ({"WHISTLE_RABBIT_API": "guest:hunter2@127.0.0.1:15672"}, "Error: WHISTLE_RABBIT_API "
     "must be an http:// or https:// URL (like http://USER:PASSWORD@127.0.0.1:15672)"),
])
@pytest.mark.parametrize("args", [("status",), ("dlq", "list"), ("dlq", "replay", "--all"),
                                  ("dlq", "drop", "--index", "1", "--discard"),
                                  ("queues", "migrate", "--to", "classic"),
                                  ("routing", "corrections")])
def test_the_operators_backend_commands_refuse_a_malformed_variable_in_one_line(
        env, says, args):
    # these read the environment raw: Redis's or kombu's traceback, or an "unreachable at x"
    result = run(*args, env={**NOWHERE, **env})
    assert result.exit_code == 1 and one_error_line(result) == says
    assert "hunter2" not in result.output


@pytest.mark.parametrize(("value", "says"), [
    ("2", "Error: WHISTLE_TRIAGE_THRESHOLD='2' must be between 0 and 1"),
    ("90%", "Error: WHISTLE_TRIAGE_THRESHOLD='90%' is not a number"),
])
def test_route_refuses_a_triage_threshold_as_every_command_refuses_a_variable(value, says):
    # it was exit 2, a usage error, though nothing on the command line was wrong
    result = run("route", "漏水", env={"WHISTLE_TRIAGE_THRESHOLD": value})
    assert result.exit_code == 1 and one_error_line(result) == says


def test_up_runs_a_service_named_twice_once(monkeypatch):
    # `--services web,web` ran web twice in one process: tracebacks, exit 1
    ran = []
    monkeypatch.setattr("whistle.runner.run", lambda names, config, on_started: ran.append(names))
    monkeypatch.setattr("whistle.cli.migrate_or_warn", lambda url: None)
    result = run("up", "--services", "web, routing,web")
    assert result.exit_code == 0 and ran == [("web", "routing")]


def test_the_longest_token_lifetime_the_config_takes_is_the_longest_a_token_lives():
    from shared import config as cfg
    from shared.auth import MAX_TTL_S

    assert cfg.config_from_env({"WHISTLE_TOKEN_TTL": str(MAX_TTL_S)})["WHISTLE_TOKEN_TTL"] == MAX_TTL_S


def test_dlq_list_says_the_order_it_lists_in():
    """It said "oldest first" but lists in queue order, the order --index counts in: two
    services dead-lettering within milliseconds can arrive either way round."""
    shown = " ".join(run("dlq", "list", "--help").output.split())
    assert "oldest first" not in shown and "in queue order" in shown

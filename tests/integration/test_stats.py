"""The three rates (三率) served by intake: the known history journaled in real Redis."""

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
import redis
import requests
from nameko.standalone.rpc import ClusterRpcProxy

from services.intake.service import IntakeService
from shared import config as cfg
from shared.contracts import Channel, Language, Location
from shared.errors import InvalidPayload
from shared.issue import receive
from shared.jsoncodec import utc_moment
from shared.store import IssueStore, dumps
from tests.e2e.conftest import WHISTLE
from tests.support.auth import DESK, staff_headers
from tests.unit.test_stats import (
    EXPECTED_AGENCIES,
    EXPECTED_OVERALL,
    created,
    known_history,
)

pytestmark = pytest.mark.integration

PLACE = Location(community="缤泰社区", address="丽德花园3号楼")
# A window that has ended, so every figure is final: [since, since + 7 days).
SINCE = (datetime.now(UTC) - timedelta(days=10)).replace(microsecond=0)
UNTIL = SINCE + timedelta(days=7)
WINDOW = {"since": SINCE.isoformat(), "until": UNTIL.isoformat()}


@pytest.fixture
def store(whistle_config):
    client = redis.Redis.from_url(whistle_config[cfg.REDIS_URL], decode_responses=True)
    yield IssueStore(client, whistle_config[cfg.KEY_PREFIX])
    client.close()


def journaled(store, issue_id, journal):
    """Create the issue, received at its first event, and journal every entry."""
    received_at = min(datetime.fromisoformat(e["occurred_at"]) for e in journal)
    record = receive(issue_id, f"trace-{issue_id}", "楼道里电线耷拉下来", None, PLACE,
                     Channel.desk, Language.zh, received_at)
    store.create(record, {}, "test", {})
    # Services journal their events as they commit them; a known history is written
    # straight into the journal, in the order given.
    if journal:
        store.redis.rpush(store.keys.journal(issue_id), *(dumps(entry) for entry in journal))


@pytest.fixture
def intake(container_factory, whistle_config, store):
    for issue_id, journal in known_history(SINCE).items():
        journaled(store, issue_id, journal)
    # Received more than 60 days before the window: not read, though it has an
    # assignment in the window (see services/intake/stats.py, "Which issues are read").
    journaled(store, "WH-20260101-0001", [
        created("WH-20260101-0001", "gas", SINCE - timedelta(days=61)),
        created("WH-20260101-0001", "sanitation", SINCE + timedelta(days=1)),
    ])
    container_factory(IntakeService, whistle_config).start()
    return f"http://{whistle_config[cfg.WEB_SERVER_ADDRESS]}"


def check_figures(report):
    assert report["window"] == {"since": utc_moment(SINCE), "until": utc_moment(UNTIL),
                                "as_of": utc_moment(UNTIL), "issues": 6}
    assert report["overall"] == EXPECTED_OVERALL
    assert report["agencies"] == EXPECTED_AGENCIES


def test_stats_over_http_and_rpc(intake, whistle_config):
    response = requests.get(f"{intake}/stats", headers=DESK, params=WINDOW, timeout=10)
    assert response.status_code == 200, response.text
    check_figures(response.json())

    with ClusterRpcProxy({"AMQP_URI": whistle_config[cfg.AMQP_URI]}, timeout=10) as rpc:
        assert rpc.intake.stats(WINDOW) == response.json()
        recent = rpc.intake.stats()  # the last 30 days, until now
        with pytest.raises(InvalidPayload) as caught:
            rpc.intake.stats({"since": "last tuesday"})
    assert [f["field"] for f in caught.value.errors] == ["since"]
    # The 7 above, E's cycle 0 (22 days ago), F's two, and the old issue's sanitation
    # (received 71 days ago: within 60 days of this window's start).
    assert recent["overall"]["assigned"] == 11
    assert recent["window"]["issues"] == 7


@pytest.mark.parametrize(("params", "field"), [
    ({"since": "2026-13-01T00:00:00Z"}, "since"),
    ({"since": "2026-11-01T00:00:00"}, "since"),
    ({"since": UNTIL.isoformat(), "until": SINCE.isoformat()}, "since"),
    ({"until": "tomorrow"}, "until"),
    ({"agency": "power"}, "agency"),
])
def test_a_bad_window_is_422_naming_the_field(intake, params, field):
    response = requests.get(f"{intake}/stats", headers=DESK, params=params, timeout=10)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_payload" and field in error["message"]
    assert [f["field"] for f in error["fields"]] == [field]


def whistle_stats(*args, env_extra: dict | None = None):
    env = {**os.environ, "WHISTLE_TZ": "UTC", "COLUMNS": "200", "PYTHONWARNINGS": "ignore",
           **(env_extra or {})}
    return subprocess.run([WHISTLE, "stats", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_cli_prints_the_figures(intake):
    window = ["--since", SINCE.isoformat(), "--until", UNTIL.isoformat(), "--url", intake]
    result = whistle_stats("--json", *window)
    assert result.returncode == 0, result.stderr
    check_figures(json.loads(result.stdout))
    last_30_days = json.loads(whistle_stats("--json", "--days", "30", "--url", intake).stdout)
    since, until = (datetime.fromisoformat(last_30_days["window"][k]) for k in ("since", "until"))
    assert until - since == timedelta(days=30)
    assert abs((datetime.now(UTC) - until).total_seconds()) < 30
    assert last_30_days["overall"]["assigned"] == 11

    table = whistle_stats(*window)
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines() if line.strip()}
    # agency, assigned, response, resolution, satisfaction, ack p50/p90, resolve p50/p90,
    # open, overdue, escalated; then satisfaction by link and by the desk (call-backs)
    assert rows["overall"] == ["overall", "7", "71.4%", "57.1%", "50.0%", "(2/4)", "1h/10h",
                               "4h/1d", "3", "2", "4", "0.0%", "(0/2)", "100.0%", "(2/2)"]
    assert rows["gas"] == ["gas", "2", "100.0%", "100.0%", "50.0%", "(1/2)", "30m/2h", "4h/10h",
                           "0", "0", "0", "0.0%", "(0/1)", "100.0%", "(1/1)"]
    assert rows["housing"] == ["housing", "1", "100.0%", "0.0%", "-", "(0/0)", "2h/2h", "-/-",
                               "1", "1", "1", "-", "(0/0)", "-", "(0/0)"]
    assert rows["power"][1:] == ["2", "50.0%", "50.0%", "100.0%", "(1/1)", "1h/1h", "4h/4h",
                                 "1", "1", "2", "-", "(0/0)", "100.0%", "(1/1)"]
    assert rows["water"][1:] == ["2", "50.0%", "50.0%", "50.0%", "(1/2)", "1h/10h", "1d/1d",
                                 "1", "0", "1", "0.0%", "(0/1)", "100.0%", "(1/1)"]


def test_cli_reports_a_bad_window_and_an_unreachable_whistle(intake):
    bad = whistle_stats("--url", intake, "--since", "2026-11-08", "--until", "2026-11-01")
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[-1] == ("Error: --since 2026-11-08 must be earlier than "
                                           "--until 2026-11-01")
    # What only the service checks is shown with its reason, not just the field's name.
    long = whistle_stats("--url", intake, "--since", "2024-11-01", "--until", "2026-11-01")
    assert long.returncode == 1
    assert long.stderr.strip() == ("Error: GET /stats answered 422: invalid request: since "
                                   "(since: the window must not be longer than 366 days)")
    both = whistle_stats("--url", intake, "--since", "2026-11-01", "--days", "3")
    assert both.returncode == 2 and "not both" in both.stderr
    gone = whistle_stats("--url", "http://127.0.0.1:9", "--days", "3")
    assert gone.returncode == 1
    assert gone.stderr.strip() == "Error: cannot reach Whistle at http://127.0.0.1:9 (Connection refused)"
    assert "Traceback" not in bad.stderr + long.stderr + both.stderr + gone.stderr


def test_cli_sends_moments_the_api_takes_and_says_which_are_out_of_reach(intake):
    """A zone's offset before it kept standard time is its local mean time, to the second
    (Africa/Monrovia's -00:44:30 until 1972, Asia/Shanghai's +08:05:43 until 1901): the
    CLI sent it, ISO 8601 cannot write it, and the API refused the window. Sent in UTC
    now; and a moment outside the years the stats cover is one usage line (exit 2)."""
    monrovia = whistle_stats("--json", "--url", intake, "--since", "1971-06-01", "--until",
                             "1972-01-01", env_extra={"WHISTLE_TZ": "Africa/Monrovia"})
    assert monrovia.returncode == 0, monrovia.stderr
    window = json.loads(monrovia.stdout)["window"]
    assert (window["since"], window["until"]) == ("1971-06-01T00:44:30Z", "1972-01-01T00:44:30Z")
    for option, value, zone in (("--since", "0001-01-01", "Asia/Shanghai"),
                                ("--since", "1969-12-31T23:59:59Z", "UTC"),
                                ("--until", "9999-12-31", "America/New_York")):
        refused = whistle_stats("--url", intake, option, value, env_extra={"WHISTLE_TZ": zone})
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.splitlines()[-1] == (
            f"Error: Invalid value for {option}: '{value}' is outside the years Whistle's "
            "stats cover (1970 to 9998, in UTC)")
        assert "Traceback" not in refused.stderr


def test_stats_refused_says_which_credential_to_change(intake):
    signed_elsewhere = whistle_stats("--url", intake, env_extra={"WHISTLE_SECRET": "y" * 40})
    assert signed_elsewhere.returncode == 1
    assert signed_elsewhere.stderr.strip() == (
        "Error: GET /stats answered 401: token is invalid (these commands act as the desk: "
        "set WHISTLE_TOKEN to a desk token, or WHISTLE_SECRET to the one Whistle runs with)")
    agency = staff_headers("power")["Authorization"].removeprefix("Bearer ")
    as_agency = whistle_stats("--url", intake, env_extra={"WHISTLE_TOKEN": agency})
    assert as_agency.returncode == 1
    assert as_agency.stderr.strip().startswith("Error: GET /stats answered 403: ")
    assert as_agency.stderr.strip().endswith("(these commands act as the desk: set "
                                             "WHISTLE_TOKEN to a desk token, or WHISTLE_SECRET "
                                             "to the one Whistle runs with)")


def test_demo_with_another_secret_than_whistles_says_which_one_to_set(intake):
    """The demo signs its own tokens: a real intake refuses them (401), and the one line
    says what to change. Here, beside the stats' intake, because it is a real one."""
    env = dict(os.environ, WHISTLE_SECRET="y" * 40, PYTHONWARNINGS="ignore")
    result = subprocess.run([WHISTLE, "demo", "--url", intake], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: POST /issues answered 401: token is invalid (the demo signs its tokens "
        "with WHISTLE_SECRET: set it to the one Whistle runs with)")
    gone = subprocess.run([WHISTLE, "demo", "--url", "127.0.0.1:9"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert gone.returncode == 1
    assert gone.stderr.strip().splitlines()[-1] == (
        "Error: Whistle is not answering at http://127.0.0.1:9 (Connection refused); start "
        "it with `make up` or `whistle up`")

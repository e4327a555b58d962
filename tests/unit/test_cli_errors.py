"""The operators' commands' errors: one line naming the bad option, a non-zero exit
(2 for usage), never a traceback; the broker is an address nobody listens on."""

import pytest

from tests.support.cli import one_error_line, run


def test_tail_with_the_broker_out_of_reach_says_so_in_one_line():
    result = run("tail", env={"AMQP_URI": "amqp://guest:guest@127.0.0.1:1/"})
    assert result.exit_code == 1
    assert one_error_line(result).startswith("Error: cannot reach RabbitMQ at 127.0.0.1:1")


def test_archive_refuses_a_retention_that_is_not_a_duration():
    result = run("archive", "--retention", "bogus")
    assert result.exit_code == 2
    assert "'--retention'" in one_error_line(result) and "bogus" in result.output


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_audit_refuses_a_limit_below_one_before_reading_redis(limit):
    result = run("audit", "--limit", limit, env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.exit_code == 2 and "'--limit'" in one_error_line(result)

"""``whistle token``: a lifetime of 0 and a token id that is not one are refused."""

import pytest

from shared.auth import issue_token, looks_like_jti, verify_token
from tests.support.cli import one_error_line, run


@pytest.mark.parametrize("ttl", ["0", "-5"])
def test_token_refuses_a_lifetime_of_zero_like_a_negative_one(ttl):
    result = run("token", "desk", "--ttl", ttl)
    assert result.exit_code == 2
    assert "between 1 s and 604800 s" in one_error_line(result)


def test_token_revoke_refuses_what_is_not_a_token_id():
    env = {"REDIS_URL": "redis://127.0.0.1:1/0"}  # refused before Redis is read
    result = run("token", "revoke", "not-a-jti", env=env)
    assert result.exit_code == 2 and "'not-a-jti' is not a token id" in one_error_line(result)
    result = run("token", "revoke", env=env)
    assert result.exit_code == 2
    assert one_error_line(result) == "Error: give a token id (JTI) or --staff AGENCY:STAFF_ID"


def test_a_token_id_looks_like_the_issuers():
    jti = verify_token(issue_token("desk", "s1", "x" * 32, 60), "x" * 32).jti
    assert looks_like_jti(jti)
    assert not looks_like_jti("not-a-jti") and not looks_like_jti(jti.upper())
    assert not looks_like_jti(jti + "0")


@pytest.mark.parametrize("staff_id", ["li\nwei", "li\twei", " li-09", "x" * 65])
def test_a_staff_id_that_would_break_a_line_or_bloat_every_request_is_refused(staff_id):
    """A staff id goes on the issue's timeline and in `whistle audit`'s one line per
    entry: ``--staff $'a\\nb'`` split that line in two, and 500 characters rode in every
    request's header. Refused before signing, naming --staff. (`token revoke --staff`
    takes any: a token issued before this check must stay revocable.)"""
    result = run("token", "issue", "desk", "--staff", staff_id)
    assert result.exit_code == 2, result.output
    line = one_error_line(result) if "\n" not in staff_id else result.output
    assert "Invalid value for '--staff'" in line and "1 to 64" in line, result.output
    issued = run("token", "issue", "desk", "--staff", "李伟 gd-017")
    assert issued.exit_code == 0, issued.output


def test_audit_json_gives_the_status_as_a_number(monkeypatch):
    """Redis keeps every field as text; ``--json`` gave ``"status": "400"`` where every
    other JSON of Whistle's (the HTTP API, ``dlq list --json``) gives numbers."""
    import json

    import shared.guard
    import shared.store

    class NoRedis:
        def close(self):
            pass

    entry = {"id": "1-0", "at": "2026-12-07T10:00:00+00:00", "action": "issue.submit",
             "status": "400", "role": "desk", "staff_id": "d-5"}
    monkeypatch.setattr(shared.store, "connect", lambda url: NoRedis())
    monkeypatch.setattr(shared.guard, "audit_entries", lambda client, prefix, limit: [entry])
    result = run("audit", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["status"] == 400 and shown["action"] == "issue.submit"

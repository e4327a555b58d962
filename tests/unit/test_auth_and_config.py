"""Staff tokens (shared.auth) and configuration from the environment (shared.config)."""

from __future__ import annotations

import time

import jwt
import pytest

from shared import config as cfg
from shared.auth import (
    ALGORITHM,
    AUDIENCE,
    DEFAULT_TTL_S,
    ISSUER,
    MAX_TTL_S,
    Role,
    authorize,
    bearer_token,
    issue_token,
    verify_token,
)
from shared.errors import Forbidden, Unauthorized

SECRET = "unit-test-secret-0123456789abcdef-0123456789"
OTHER_SECRET = "another-secret-fedcba9876543210-fedcba987654"
STRONG_SECRET = "Zq7v1yW3nP0cL8xR5tB2mK9dF4hJ6sG1"  # 32 characters
PROD_AMQP = "amqp://whistle:s3cr3t-pw@rabbit.internal:5672/whistle"


def claims(**overrides) -> dict:
    # Parametrized cases build their claims at collection time, and the unit tests run
    # last in a full run (after more than ten minutes): a day keeps them unexpired.
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "staff-7", "agency": "power",
            "jti": "jti-1", "iat": now, "exp": now + 86400}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


# ---------------------------------------------------------------------------- tokens


def test_issue_and_verify_round_trip():
    token = issue_token("power", "staff-7", SECRET)
    principal = verify_token(token, SECRET)
    assert (principal.role, principal.agency, principal.staff_id) == (
        Role.agency, "power", "staff-7")
    assert len(principal.jti) == 32 and principal.communities is None
    assert principal.expires_at - principal.issued_at == DEFAULT_TTL_S == 10 * 3600


def test_token_carries_the_expected_claims():
    token = issue_token("housing", "s-1", SECRET, ttl_s=60, now=1_800_000_000, jti="j-1")
    decoded = jwt.decode(token, SECRET, algorithms=[ALGORITHM], audience=AUDIENCE,
                         options={"verify_exp": False, "verify_iat": False})
    assert decoded == {"iss": "whistle", "aud": "whistle-agency", "sub": "s-1",
                       "agency": "housing", "jti": "j-1", "iat": 1_800_000_000,
                       "exp": 1_800_000_060, "auth_time": 1_800_000_000}


def test_every_token_has_its_own_jti():
    assert len({verify_token(issue_token("power", "s", SECRET), SECRET).jti
                for _ in range(20)}) == 20


def test_a_desk_token_can_be_scoped_to_communities_and_an_agency_token_cannot():
    desk = verify_token(issue_token("desk", "d-1", SECRET, communities=["缤泰社区", "和平里社区"]),
                        SECRET)
    assert desk.role is Role.desk and desk.communities == {"缤泰社区", "和平里社区"}
    with pytest.raises(ValueError, match="only desk tokens"):
        issue_token("power", "p-1", SECRET, communities=["缤泰社区"])


def test_no_staff_token_lives_longer_than_the_maximum():
    with pytest.raises(ValueError, match="between 1 s and"):
        issue_token("desk", "d-1", SECRET, ttl_s=MAX_TTL_S + 1)


def test_expired_token_is_unauthorized():
    token = issue_token("power", "staff-7", SECRET, ttl_s=60, now=time.time() - 3600)
    with pytest.raises(Unauthorized) as info:
        verify_token(token, SECRET)
    assert info.value.message == "token has expired"
    assert info.value.status == 401


def test_token_still_valid_before_expiry():
    token = issue_token("power", "staff-7", SECRET, ttl_s=120, now=time.time() - 60)
    assert verify_token(token, SECRET).agency == "power"


def test_token_signed_with_another_secret_is_unauthorized():
    forged = issue_token("power", "staff-7", OTHER_SECRET)
    with pytest.raises(Unauthorized, match="^token is invalid$"):
        verify_token(forged, SECRET)


@pytest.mark.parametrize("token", [
    "not-a-token",
    "a.b.c",
    "eyJhbGciOiJIUzI1NiJ9.e30",
    "Bearer " + "x" * 20,
])
def test_malformed_token_is_unauthorized(token):
    with pytest.raises(Unauthorized, match="^token is invalid$"):
        verify_token(token, SECRET)


def test_tampered_payload_is_unauthorized():
    header, payload, signature = issue_token("power", "staff-7", SECRET).split(".")
    other = issue_token("housing", "staff-7", SECRET).split(".")[1]
    assert other != payload
    with pytest.raises(Unauthorized, match="^token is invalid$"):
        verify_token(f"{header}.{other}.{signature}", SECRET)


@pytest.mark.parametrize("missing", [None, ""])
def test_missing_token_is_unauthorized(missing):
    with pytest.raises(Unauthorized, match="^missing bearer token$"):
        verify_token(missing, SECRET)


@pytest.mark.parametrize("bad_claims", [
    claims(aud="someone-else"),
    claims(iss="not-whistle"),
    claims(agency=None),
    claims(sub=None),
    claims(exp=None),
    claims(agency=42),
    claims(agency=["power"]),
    claims(jti=None),
    claims(communities=["缤泰社区"]),
    claims(agency="desk", communities="缤泰社区"),
], ids=["audience", "issuer", "no-agency", "no-sub", "no-exp", "int-agency", "list-agency",
        "no-jti", "scoped-agency", "scope-not-a-list"])
def test_token_with_wrong_or_missing_claims_is_unauthorized(bad_claims):
    token = jwt.encode(bad_claims, SECRET, algorithm=ALGORITHM)
    with pytest.raises(Unauthorized, match="^token is invalid$"):
        verify_token(token, SECRET)


def test_unsigned_token_is_unauthorized():
    token = jwt.encode(claims(), key=None, algorithm="none")
    with pytest.raises(Unauthorized, match="^token is invalid$"):
        verify_token(token, SECRET)


def test_authorize_own_agency():
    token = issue_token("power", "staff-7", SECRET)
    assert authorize(token, SECRET, "power") == verify_token(token, SECRET)


def test_authorize_for_another_agency_is_forbidden():
    token = issue_token("power", "staff-7", SECRET)
    with pytest.raises(Forbidden) as info:
        authorize(token, SECRET, "housing")
    assert info.value.message == "token is for agency 'power', not 'housing'"
    assert info.value.status == 403


def test_authorize_checks_the_token_first():
    with pytest.raises(Unauthorized):
        authorize(None, SECRET, "power")
    with pytest.raises(Unauthorized):
        authorize(issue_token("power", "s", OTHER_SECRET), SECRET, "power")


# ----------------------------------------------------------------------- bearer_token


@pytest.mark.parametrize("header, token", [
    ("Bearer abc.def.ghi", "abc.def.ghi"),
    ("bearer abc.def.ghi", "abc.def.ghi"),
    ("BEARER   abc.def.ghi  ", "abc.def.ghi"),
])
def test_bearer_token_is_extracted(header, token):
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", [None, ""])
def test_missing_authorization_header_gives_none(header):
    assert bearer_token(header) is None


@pytest.mark.parametrize("header", [
    "Basic dXNlcjpwYXNz", "Token abc", "abc.def.ghi", "Bearer", "Bearer    ", "Bearerabc",
])
def test_wrong_authorization_header_is_unauthorized(header):
    with pytest.raises(Unauthorized, match="Bearer <token>"):
        bearer_token(header)


# ----------------------------------------------------------------------------- config


def test_config_defaults_without_environment():
    config = cfg.config_from_env({})
    assert config == cfg.DEFAULTS
    assert config is not cfg.DEFAULTS
    assert config[cfg.SECRET] == cfg.DEV_SECRET
    assert config[cfg.ENVIRONMENT] == "development"


def test_config_reads_env_names_and_coerces_ints():
    env = {
        "AMQP_URI": "amqp://u:p@mq:5672/",
        "REDIS_URL": "redis://cache:6379/3",
        "WHISTLE_KEY_PREFIX": "wx",
        "WHISTLE_TOKEN_TTL": "60",
        "WHISTLE_MAX_ATTEMPTS": "7",
        "WHISTLE_RETRY_DELAY_MS": "250",
        "MAX_WORKERS": "3",
        "WHISTLE_TZ": "UTC",
        "UNRELATED": "ignored",
    }
    config = cfg.config_from_env(env)
    assert config[cfg.AMQP_URI] == "amqp://u:p@mq:5672/"
    assert config[cfg.REDIS_URL] == "redis://cache:6379/3"
    assert config[cfg.KEY_PREFIX] == "wx"
    assert config[cfg.DISPLAY_TZ] == "UTC"
    assert config[cfg.TOKEN_TTL] == 60
    assert config[cfg.MAX_ATTEMPTS] == 7
    assert config[cfg.RETRY_DELAY_MS] == 250
    assert config["max_workers"] == 3
    for key in (cfg.TOKEN_TTL, cfg.MAX_ATTEMPTS, cfg.RETRY_DELAY_MS, cfg.MAX_WORKERS):
        assert type(config[key]) is int
    assert "UNRELATED" not in config


def test_config_ignores_empty_env_values_and_applies_overrides():
    config = cfg.config_from_env({"REDIS_URL": "", "WHISTLE_TOKEN_TTL": "60"},
                                 **{cfg.TOKEN_TTL: "90", cfg.LOG_FORMAT: "console"})
    assert config[cfg.REDIS_URL] == cfg.DEFAULTS[cfg.REDIS_URL]
    assert config[cfg.TOKEN_TTL] == 90
    assert config[cfg.LOG_FORMAT] == "console"


def test_config_get_falls_back_to_default():
    assert cfg.get({cfg.SECRET: ""}, cfg.SECRET) == cfg.DEV_SECRET
    assert cfg.get({}, cfg.TOKEN_TTL) == 10 * 3600
    assert cfg.get({cfg.SECRET: "x"}, cfg.SECRET) == "x"


def test_normalise_coerces_strings_from_nameko_run():
    config = cfg.normalise({cfg.MAX_ATTEMPTS: "4", cfg.MAX_WORKERS: "2", cfg.SECRET: "s"})
    assert config == {cfg.MAX_ATTEMPTS: 4, cfg.MAX_WORKERS: 2, cfg.SECRET: "s"}


def prod_env(**overrides) -> dict[str, str]:
    env = {"WHISTLE_ENV": "production", "WHISTLE_SECRET": STRONG_SECRET, "AMQP_URI": PROD_AMQP,
           "WHISTLE_DATABASE_URL": "postgresql://whistle:pw@db.internal:5432/whistle"}
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def test_production_accepts_a_proper_config():
    config = cfg.config_from_env(prod_env())
    assert config[cfg.ENVIRONMENT] == "production"
    assert config[cfg.SECRET] == STRONG_SECRET
    assert config[cfg.AMQP_URI] == PROD_AMQP


@pytest.mark.parametrize("url", [None, cfg.DEV_DATABASE_URL], ids=["unset", "dev-default"])
def test_production_refuses_the_development_database(url):
    with pytest.raises(cfg.ConfigurationError, match="WHISTLE_DATABASE_URL must name"):
        cfg.config_from_env(prod_env(WHISTLE_DATABASE_URL=url))


@pytest.mark.parametrize("value, seconds", [("1d", 86400), ("12h", 43200), ("90m", 5400),
                                            ("30s", 30), ("0", 0), ("2.5", 2.5)])
def test_hot_retention_is_a_duration(value, seconds):
    assert cfg.duration_s(value) == seconds
    assert cfg.config_from_env({"WHISTLE_HOT_RETENTION": value})[cfg.HOT_RETENTION] == value


@pytest.mark.parametrize("value", ["a day", "-1h", "1w"])
def test_hot_retention_refuses_what_is_not_a_duration(value):
    with pytest.raises(cfg.ConfigurationError, match="duration"):
        cfg.config_from_env({"WHISTLE_HOT_RETENTION": value})


@pytest.mark.parametrize("secret", [None, cfg.DEV_SECRET], ids=["unset", "dev-secret"])
def test_production_refuses_the_dev_secret(secret):
    with pytest.raises(cfg.ConfigurationError, match="WHISTLE_SECRET must be set"):
        cfg.config_from_env(prod_env(WHISTLE_SECRET=secret))


def test_production_refuses_a_short_secret():
    with pytest.raises(cfg.ConfigurationError, match="at least 32 characters"):
        cfg.config_from_env(prod_env(WHISTLE_SECRET=STRONG_SECRET[:31]))


@pytest.mark.parametrize("uri", [
    None,
    "amqp://guest:guest@rabbit.internal:5672/",
    "amqp://guest:guest@127.0.0.1:5672/",
], ids=["unset", "guest-remote", "guest-local"])
def test_production_refuses_guest_amqp_credentials(uri):
    with pytest.raises(cfg.ConfigurationError, match="AMQP_URI must not use the guest account"):
        cfg.config_from_env(prod_env(AMQP_URI=uri))


@pytest.mark.parametrize("uri", [
    "amqp://rabbit.internal:5672/",
    "amqp://guest@rabbit.internal:5672/",
], ids=["no-credentials", "guest-no-password"])
def test_production_refuses_uris_that_default_to_guest(uri):
    with pytest.raises(cfg.ConfigurationError, match="guest"):
        cfg.config_from_env(prod_env(AMQP_URI=uri))


def test_production_lists_every_problem_at_once():
    with pytest.raises(cfg.ConfigurationError) as info:
        cfg.config_from_env({"WHISTLE_ENV": "production"})
    message = str(info.value)
    assert message.startswith("refusing to start in production: ")
    assert "WHISTLE_SECRET" in message and "AMQP_URI" in message


@pytest.mark.parametrize("value", ["prodution", "staging", "live"])
def test_an_unknown_environment_is_refused_not_taken_for_development(value):
    # It used to count as development: a typo in production ran on the dev secret.
    with pytest.raises(cfg.ConfigurationError, match="WHISTLE_ENV must be development"):
        cfg.config_from_env({"WHISTLE_ENV": value})


def test_development_allows_dev_defaults():
    config = cfg.config_from_env({"WHISTLE_ENV": "development"})
    assert config[cfg.SECRET] == cfg.DEV_SECRET
    assert config[cfg.AMQP_URI] == cfg.DEV_AMQP_URI
    cfg.check_production(config)  # no error outside production


def test_a_bare_port_is_served_on_loopback_like_the_default():
    # nameko would take "8126" as every interface, and the CLI as http://8126
    assert cfg.config_from_env({"WEB_SERVER_ADDRESS": "8126"})[cfg.WEB_SERVER_ADDRESS] == \
        "127.0.0.1:8126"
    assert cfg.web_address(" 0.0.0.0:8000 ") == "0.0.0.0:8000"
    assert cfg.web_address("whistle-web:80") == "whistle-web:80"

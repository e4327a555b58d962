"""Every page and every form, for every identity, against ``whistle up`` (real processes).

The pages' twin of ``tests/integration/test_security.py``'s table: the same seven
identities, each as a browser would be (staff signed in, with their session's cookie and
its CSRF secret; residents with their link's token; anonymous with nothing), and the
status each gets, redirects not followed. It also fails when the web service serves a
route this table does not list, so no page or form can be added without saying who may
open it.
"""

from __future__ import annotations

import re

import pytest
import requests

from services.web.service import WebService
from shared import config as cfg
from shared.auth import issue_feedback_token, issue_token
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

IDENTITIES = ("anonymous", "desk", "assigned agency", "another agency",
              "formerly assigned agency", "resident, own link", "resident, other issue's link")
STAFF = {"desk": "desk", "assigned agency": "power", "another agency": "water",
         "formerly assigned agency": "urban_management"}
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
SIGN_IN = "303 to /signin"  # anonymous, or a resident's link on a staff page


def row(*statuses: int | str) -> dict[str, int | str]:
    assert len(statuses) == len(IDENTITIES)
    return dict(zip(IDENTITIES, statuses, strict=True))


def bearer(agency: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(agency, f"{agency}-1", cfg.DEV_SECRET)}


@pytest.fixture
def whistle(whistle_processes):
    return whistle_processes("intake,routing,agency,notify,web")


def signed_in(base: str, agency: str, **claims) -> tuple[requests.Session, str]:
    """A browser session signed in with a staff token (``claims``: its ``communities``),
    and its forms' CSRF secret."""
    session = requests.Session()
    form = session.get(f"{base}/signin", timeout=5).text
    answer = session.post(f"{base}/signin", timeout=5, allow_redirects=False, data={
        "token": issue_token(agency, f"{agency}-1", cfg.DEV_SECRET, **claims),
        "csrf": CSRF.search(form).group(1)})
    assert answer.status_code == 303, answer.text
    home = session.get(base + answer.headers["Location"], timeout=10).text
    return session, CSRF.search(home).group(1)


def submit(base: str, description: str, community: str) -> str:
    made = requests.post(f"{base}/issues", headers=bearer("desk"), timeout=10, json={
        "description": description, "location": {"community": community, "address": "3号楼"}})
    assert made.status_code == 201, made.text
    return made.json()["issue_id"]


def test_every_page_and_form_for_every_identity(whistle):
    base = whistle.url
    issue_id = submit(base, "小区里有根电线耷拉下来了，不知道有没有电", "缤泰社区")
    other_id = submit(base, "楼上漏水，卫生间天花板一直在滴水", "和平里社区")
    desk_api = bearer("desk")
    wait_for(lambda: requests.get(f"{base}/issues/{issue_id}", headers=desk_api,
                                  timeout=5).json()["status"], lambda s: s == "dispatched",
             timeout=30)
    # The formerly assigned agency: invited to the table, then done with its part.
    convened = requests.post(f"{base}/issues/{issue_id}/table", headers=desk_api, timeout=10,
                             json={"meets_at": "2030-12-01T09:00:00+08:00", "place": "红色议事厅",
                                   "agencies": ["urban_management"]})
    assert convened.status_code == 201, convened.text
    for step, body in (("acknowledge", None), ("resolve", {"note": "已清理"})):
        done = requests.post(
            f"{base}/agencies/urban_management/assignments/{issue_id}/{step}",
            headers=bearer("urban_management"), json=body, timeout=10)
        assert done.status_code == 200, done.text

    # The issue's "received" message, in the desk's outbox (the default channel): to relay.
    [relay] = wait_for(lambda: [n["notification_id"] for n in requests.get(
        f"{base}/issues/{issue_id}/notifications", headers=desk_api, timeout=5).json()[
        "notifications"] if n["kind"] == "received"], bool)

    sessions = {"anonymous": (requests.Session(), "")}
    for identity, agency in STAFF.items():
        sessions[identity] = signed_in(base, agency)
    # Rating links, which also open the resident's page (a progress link rates nothing).
    links = {"resident, own link": issue_feedback_token(issue_id, issue_id, 0, cfg.DEV_SECRET,
                                                        ttl_s=3600),
             "resident, other issue's link": issue_feedback_token(other_id, other_id, 0,
                                                                  cfg.DEV_SECRET, ttl_s=3600)}
    for identity in links:
        sessions[identity] = (requests.Session(), "")

    power = f"/agency/power/assignments/{issue_id}"
    desk = f"/desk/issues/{issue_id}"
    # (method, path, form, expected): in this order, since the forms move the issue on.
    # A form the caller may send but whose content is refused is redrawn with its errors
    # (422); one the issue's state refuses says so on its page (409).
    table = [
        ("GET", "/health", None, row(200, 200, 200, 200, 200, 200, 200)),
        ("GET", "/static/app.css", None, row(200, 200, 200, 200, 200, 200, 200)),
        ("GET", "/signin", None, row(200, 200, 200, 200, 200, 200, 200)),
        # Signing in needs the secret of a sign-in form this browser was given.
        ("POST", "/signin", {"token": issue_token("desk", "d-9", cfg.DEV_SECRET)},
         row(403, 403, 403, 403, 403, 403, 403)),
        ("GET", "/", None, row(SIGN_IN, 303, 303, 303, 303, SIGN_IN, SIGN_IN)),
        ("GET", "/desk", None, row(SIGN_IN, 200, 403, 403, 403, SIGN_IN, SIGN_IN)),
        ("GET", "/desk/board.json", None, row(401, 200, 403, 403, 403, 401, 401)),
        ("GET", "/desk/triage", None, row(SIGN_IN, 200, 403, 403, 403, SIGN_IN, SIGN_IN)),
        ("GET", "/desk/new", None, row(SIGN_IN, 200, 403, 403, 403, SIGN_IN, SIGN_IN)),
        ("GET", "/desk/relay", None, row(SIGN_IN, 200, 403, 403, 403, SIGN_IN, SIGN_IN)),
        ("GET", desk, None, row(SIGN_IN, 200, 403, 403, 403, SIGN_IN, SIGN_IN)),
        ("GET", "/desk/stats", None, row(SIGN_IN, 200, 403, 403, 403, SIGN_IN, SIGN_IN)),
        ("GET", "/agency", None, row(SIGN_IN, 403, 200, 200, 200, SIGN_IN, SIGN_IN)),
        ("GET", "/ops", None, row(SIGN_IN, 200, 403, 403, 403, SIGN_IN, SIGN_IN)),
        ("GET", "/ops/flow.json", None, row(401, 200, 403, 403, 403, 401, 401)),
        ("GET", f"/resident/{issue_id}", None, row(403, 403, 403, 403, 403, 200, 403)),
        ("GET", f"/issues/{issue_id}/feedback", None, row(403, 403, 403, 403, 403, 200, 403)),
        # Forms with content the owner's service refuses: nothing changes.
        ("POST", "/desk/new", {"description": ""},
         row(SIGN_IN, 422, 403, 403, 403, SIGN_IN, SIGN_IN)),
        ("POST", f"{desk}/reroute", {"category": "no_such_category", "reason": "x"},
         row(SIGN_IN, 422, 403, 403, 403, SIGN_IN, SIGN_IN)),
        ("POST", f"{desk}/triage", {"category": "flying_wire"},
         row(SIGN_IN, 409, 403, 403, 403, SIGN_IN, SIGN_IN)),  # nothing waits for triage
        ("POST", f"{desk}/table", {"meets_at": "", "place": ""},
         row(SIGN_IN, 422, 403, 403, 403, SIGN_IN, SIGN_IN)),
        ("POST", f"{desk}/table/agencies", {"agencies": "no_such_agency"},
         row(SIGN_IN, 422, 403, 403, 403, SIGN_IN, SIGN_IN)),
        ("POST", f"{desk}/table/tasks", {"agency": "power", "description": "", "due": ""},
         row(SIGN_IN, 422, 403, 403, 403, SIGN_IN, SIGN_IN)),
        ("POST", f"{desk}/table/tasks/T9/close", {"note": "已核实"},
         row(SIGN_IN, 422, 403, 403, 403, SIGN_IN, SIGN_IN)),  # there is no task T9
        ("POST", f"{desk}/split", {}, row(SIGN_IN, 409, 403, 403, 403, SIGN_IN, SIGN_IN)),
        # 电话回访: a choice left blank is said beside it; nothing to resend yet.
        ("POST", f"{desk}/rating", {"rating": "satisfied"},
         row(SIGN_IN, 422, 403, 403, 403, SIGN_IN, SIGN_IN)),
        ("POST", f"{desk}/rating-link", {}, row(SIGN_IN, 409, 403, 403, 403, SIGN_IN, SIGN_IN)),
        ("POST", f"/desk/relay/{'0' * 24}", {}, row(SIGN_IN, 404, 403, 403, 403, SIGN_IN, SIGN_IN)),
        ("POST", "/desk/relay/nope", {"note": "x" * 301},
         row(SIGN_IN, 422, 403, 403, 403, SIGN_IN, SIGN_IN)),
        ("POST", f"/agency/power/issues/{issue_id}/table/tasks/T9/done", {"note": "已更换"},
         row(SIGN_IN, 403, 422, 403, 403, SIGN_IN, SIGN_IN)),
        ("POST", f"/agency/water/assignments/{issue_id}/acknowledge", {},
         row(SIGN_IN, 403, 403, 403, 403, SIGN_IN, SIGN_IN)),  # water has no part in it
        ("POST", f"/resident/{issue_id}/rating", {"rating": "satisfied"},
         row(403, 403, 403, 403, 403, 303, 403)),  # not resolved yet: the page says so
        # Forms that act, for whoever may.
        ("POST", f"/agency/power/issues/{issue_id}/table/check-in", {},
         row(SIGN_IN, 403, 303, 403, 403, SIGN_IN, SIGN_IN)),
        ("POST", f"{power}/acknowledge", {"note": "已出发"},
         row(SIGN_IN, 403, 303, 403, 403, SIGN_IN, SIGN_IN)),
        ("POST", f"{power}/resolve", {"note": "已恢复"},
         row(SIGN_IN, 403, 303, 403, 403, SIGN_IN, SIGN_IN)),
        ("POST", f"/desk/relay/{relay}", {"note": "已电话告知"},
         row(SIGN_IN, 303, 403, 403, 403, SIGN_IN, SIGN_IN)),
        ("POST", "/signout", {}, row(*[SIGN_IN] * len(IDENTITIES))),
        ("GET", "/agency", None, row(*[SIGN_IN] * len(IDENTITIES))),  # signed out: gone
    ]
    got, expected = [], []
    for method, path, form, statuses in table:
        for identity in IDENTITIES:
            session, csrf = sessions[identity]
            link = links.get(identity)
            if method == "GET":
                params = {"token": link} if link else None
                response = session.get(base + path, params=params, timeout=10,
                                       allow_redirects=False)
            else:
                data = {**form, **({"csrf": csrf} if csrf else {}),
                        **({"token": link} if link else {})}
                response = session.post(base + path, data=data, timeout=10,
                                        allow_redirects=False)
            outcome = (SIGN_IN if response.status_code == 303
                       and response.headers["Location"].endswith("/signin")
                       else response.status_code)
            got.append((method, path, identity, outcome))
            expected.append((method, path, identity, statuses[identity]))
            assert "Traceback" not in response.text
    assert got == expected
    # Every route the web service serves is in the table.
    tabled = {(method, _rule_of(path)) for method, path, _, _ in table}
    assert served_pages() == tabled, sorted(served_pages() ^ tabled)
    # The forms that acted did act, for their owner only.
    issue = requests.get(f"{base}/issues/{issue_id}", headers=desk_api, timeout=5).json()
    assert "power" in issue["table"]["checked_in"]
    assert [a["status"] for a in issue["assignments"] if a["agency"] == "power"] == ["resolved"]
    assert [e["step"] for e in issue["timeline"]].count("relayed") == 1  # the desk's, once


def test_a_page_refuses_an_unknown_issue_as_one_the_caller_may_not_see(whistle):
    """As over the API (docs/security.md): a desk outside the issue's communities and an
    agency with no part in it get the same refusal, in the same words, for an issue id
    that names no issue as for another's issue. Before, the desk's issue page, its table
    form and an agency's check-in and task forms answered an unknown id with 404."""
    base = whistle.url
    issue_id = submit(base, "小区里有根电线耷拉下来了，不知道有没有电", "缤泰社区")
    wait_for(lambda: requests.get(f"{base}/issues/{issue_id}", headers=bearer("desk"),
                                  timeout=5).json()["status"], lambda s: s == "dispatched",
             timeout=30)
    unknown = "WH-20261121-0999"
    desk_elsewhere = signed_in(base, "desk", communities=["和平里社区"])
    water = signed_in(base, "water")
    forms = [
        (desk_elsewhere, "GET", "/desk/issues/{id}", None),
        (desk_elsewhere, "POST", "/desk/issues/{id}/table",
         {"meets_at": "2030-12-01T09:00", "place": "红色议事厅"}),
        (desk_elsewhere, "POST", "/desk/issues/{id}/triage", {"category": "flying_wire"}),
        (water, "POST", "/agency/water/issues/{id}/table/check-in", {}),
        (water, "POST", "/agency/water/issues/{id}/table/tasks/T1/done", {"note": "已更换"}),
        (water, "POST", "/agency/water/assignments/{id}/acknowledge", {}),
    ]
    for (session, csrf), method, path, form in forms:
        heard = []
        for asked in (issue_id, unknown):
            data = None if form is None else {**form, "csrf": csrf}
            response = session.request(method, base + path.format(id=asked), data=data,
                                       timeout=10, allow_redirects=False)
            heard.append((response.status_code, response.text.replace(asked, "{id}")))
        assert heard[0][0] == 403, (path, heard[0])
        assert heard[1] == heard[0], (path, heard[1][0])


def test_a_form_that_is_not_utf8_is_a_400_saying_so_not_a_413(whistle):
    """A form sent in another encoding (a latin-1 ``é``, a GBK page's bytes) was answered
    413 "what was sent is too large: shorten it" for a few bytes (werkzeug's form parser
    says so for any decoding error), and logged as an unexpected error with its trace.
    Every form page, the desk's, an agency's, the resident's rating and signing in, now
    says the form arrived garbled, as the API's 400 does for such a body."""
    base = whistle.url
    desk, desk_csrf = signed_in(base, "desk")
    power, power_csrf = signed_in(base, "power")
    garbled = "社区".encode("gbk")
    forms = [
        (desk, "/desk/new", f"csrf={desk_csrf}&description=caf".encode() + b"\xe9"),
        (desk, "/desk/issues/WH-20261121-0001/table/tasks/T1/close",
         f"csrf={desk_csrf}&note=".encode() + garbled),
        (power, "/agency/power/assignments/WH-20261121-0001/resolve",
         f"csrf={power_csrf}&note=".encode() + garbled),
        (requests.Session(), "/resident/WH-20261121-0001/rating",
         b"token=x&rating=satisfied&comment=" + garbled),
        (requests.Session(), "/signin", b"csrf=x&token=" + garbled),
    ]
    for session, path, body in forms:
        response = session.post(base + path, data=body, timeout=10, allow_redirects=False,
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 400, (path, response.status_code)
        assert "UTF-8" in response.text and "Traceback" not in response.text, path


ISSUE, TASK, AGENCY = r"WH-\d{8}-\d{4,}", r"T\d+", r"(power|water)"


def _rule_of(path: str) -> str:
    """The route a concrete path belongs to, in the web service's own spelling."""
    rule = re.sub(ISSUE, "<issue_id>", path)
    rule = re.sub(r"/tasks/" + TASK, "/tasks/<task_id>", rule)
    rule = re.sub(r"^/agency/" + AGENCY + "/", "/agency/<agency>/", rule)
    rule = re.sub(r"^/desk/relay/.+", "/desk/relay/<notification_id>", rule)
    return re.sub(r"^/static/.+", "/static/<path:name>", rule)


def served_pages() -> set[tuple[str, str]]:
    """(method, path) of every entrypoint the web service declares."""
    routes = set()
    for attribute in vars(WebService).values():
        for entrypoint in getattr(attribute, "nameko_entrypoints", ()):
            routes.add((entrypoint.method, entrypoint.url))
    return routes


def test_the_residents_rating_form_counts_against_the_links_rate_limit(whistle_processes):
    """The rating form was the one request a resident's link could send without limit
    (the API's rating and the page itself are counted): 650 posts in a minute were all
    answered, each an RPC and an audit entry. Now the form counts against the link's
    limit like the page: over it, a 429 page with Retry-After."""
    web = whistle_processes("intake,routing,agency,notify,web", env={cfg.RATE_READ: "5"})
    issue_id = submit(web.url, "楼道灯不亮了", "缤泰社区")
    link = issue_feedback_token(issue_id, issue_id, 0, cfg.DEV_SECRET, ttl_s=3600)
    answers = [requests.post(f"{web.url}/resident/{issue_id}/rating", timeout=10,
                             allow_redirects=False,
                             data={"token": link, "rating": "satisfied"})
               for _ in range(6)]
    assert [a.status_code for a in answers] == [303] * 5 + [429]
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
    assert "Traceback" not in answers[-1].text
    # A forged link is still the link's own problem page, not a count of anything.
    assert requests.post(f"{web.url}/resident/{issue_id}/rating", timeout=10,
                         data={"token": "eyJx.y.z", "rating": "satisfied"}).status_code == 403


def _page_path(rule: str, issue_id: str) -> str:
    """A served page rule with its variables given (the inverse of :func:`_rule_of`)."""
    values = {"issue_id": issue_id, "agency": "power", "task_id": "T1",
              "notification_id": "0" * 24, "name": "app.css"}
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: values[m.group(1)], rule)


def test_every_form_needs_its_csrf_secret_and_every_desk_issue_page_its_community(whistle):
    """Walked from the routes the web service declares, so a new form or issue page is
    covered the day it is added: every form that relies on the session's cookie refuses a
    missing, guessed or another session's CSRF secret (403: one holding a character
    outside ASCII was a 500 and a logged traceback, hmac.compare_digest refusing to compare
    such strings) and changes nothing; every
    desk page and form about one issue refuses a desk scoped to another community (403,
    with its own good secret); and once the session's token is revoked, every staff page
    sends the browser to sign in and every feed answers 401. The sign-in form (its own
    cookie's secret) and the resident's rating form (the link's token is what authorizes
    it) are judged in the table above and in test_pages."""
    base = whistle.url
    issue_id = submit(base, "小区里有根电线耷拉下来了，不知道有没有电", "缤泰社区")
    desk_api = bearer("desk")
    # Dispatched is not the end of it: the agency's and notify's steps come in their own
    # time. The issue is compared before and after the refusals once its timeline stands
    # still (the same on two reads a second apart), so only a refusal could move it.
    seen = []

    def stands_still(issue):
        seen.append(issue["timeline"])
        return issue["status"] == "dispatched" and len(seen) > 1 and seen[-1] == seen[-2]

    before = wait_for(lambda: requests.get(f"{base}/issues/{issue_id}", headers=desk_api,
                                           timeout=5).json(), stands_still,
                      timeout=30, interval=1.0)
    owners = {"desk": signed_in(base, "desk"), "power": signed_in(base, "power")}
    _other_session, other_csrf = signed_in(base, "desk")
    forms = sorted(path for method, path in served_pages()
                   if method == "POST" and path not in ("/signin", "/resident/<issue_id>/rating"))
    heard = []
    for rule in forms:
        session, _csrf = owners["power" if rule.startswith("/agency/") else "desk"]
        for name, secret in (("none", None), ("guessed", "guessed"),
                             ("another session's", other_csrf), ("not ASCII", "令牌é")):
            data = {"note": "已处理", "category": "flying_wire", "reason": "x"}
            if secret is not None:
                data["csrf"] = secret
            response = session.post(base + _page_path(rule, issue_id), data=data, timeout=10,
                                    allow_redirects=False)
            heard.append((rule, name, response.status_code))
    assert heard == [(rule, name, 403) for rule, name, _ in heard]
    browser = requests.Session()
    browser.get(f"{base}/signin", timeout=5)  # the sign-in form's own cookie
    assert browser.post(f"{base}/signin", data={"csrf": "令牌é", "token": "x"}, timeout=5,
                        allow_redirects=False).status_code == 403
    # Still signed in: the refusals were the forms', not the sessions'.
    assert owners["desk"][0].get(f"{base}/desk", timeout=10).status_code == 200

    elsewhere, elsewhere_csrf = signed_in(base, "desk", communities=["和平里社区"])
    heard = []
    for method, rule in sorted(served_pages()):
        if not rule.startswith("/desk/issues/<issue_id>"):
            continue
        response = elsewhere.request(
            method, base + _page_path(rule, issue_id), timeout=10, allow_redirects=False,
            data=None if method == "GET" else {"csrf": elsewhere_csrf, "note": "已处理",
                                               "category": "flying_wire", "reason": "x"})
        heard.append((method, rule, response.status_code))
    assert heard and heard == [(method, rule, 403) for method, rule, _ in heard]
    after = requests.get(f"{base}/issues/{issue_id}", headers=desk_api, timeout=5).json()
    assert (after["status"], after["table"], after["timeline"]) == (
        before["status"], before["table"], before["timeline"])

    # Revoked (a refresh revokes the token it replaces): the session's next request, on
    # every staff page and feed, ends it.
    token = issue_token("desk", "desk-revoked", cfg.DEV_SECRET)
    revoked_session = requests.Session()
    form = revoked_session.get(f"{base}/signin", timeout=5).text
    assert revoked_session.post(f"{base}/signin", timeout=5, allow_redirects=False, data={
        "token": token, "csrf": CSRF.search(form).group(1)}).status_code == 303
    from shared.auth import verify_token
    done = requests.post(f"{base}/auth/refresh", timeout=5,
                         headers={"Authorization": f"Bearer {token}"})
    assert done.status_code == 200, done.text
    assert verify_token(done.json()["token"], cfg.DEV_SECRET).jti != verify_token(
        token, cfg.DEV_SECRET).jti
    heard = []
    for method, rule in sorted(served_pages()):
        if method != "GET" or not rule.startswith(("/desk", "/agency", "/ops")):
            continue
        response = revoked_session.get(base + _page_path(rule, issue_id), timeout=10,
                                       allow_redirects=False)
        outcome = (SIGN_IN if response.status_code == 303
                   and response.headers["Location"].endswith("/signin")
                   else response.status_code)
        heard.append((rule, outcome))
    assert heard == [(rule, 401 if rule.endswith(".json") else SIGN_IN) for rule, _ in heard]

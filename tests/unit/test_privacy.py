"""Masking of residents' phone numbers and names (shared.privacy)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.auth import issue_feedback_token, issue_token, verify_token
from shared.guard import audited_issue_id
from shared.privacy import mask_name, mask_phone, scrub, scrub_text

# ----------------------------------------------------------------------- mask_phone


@pytest.mark.parametrize("phone", [
    "13812345678",
    "+8613812345678",
    "8613812345678",
    "+86 13812345678",
    "+86 138 1234 5678",
    "+86-138-1234-5678",
    "138 1234 5678",
    "138-1234-5678",
    " 138-1234-5678 ",
])
def test_mask_mobile_in_every_common_spelling(phone):
    assert mask_phone(phone) == "138****5678"


@pytest.mark.parametrize("phone, masked", [
    ("010-12345678", "*******5678"),
    ("0755-1234567", "*******4567"),
    ("0755 8888 9999", "********9999"),
    ("021 6543 2100", "*******2100"),
])
def test_mask_landline_keeps_only_last_four_digits(phone, masked):
    assert mask_phone(phone) == masked


@pytest.mark.parametrize("phone, masked", [
    ("12345", "*2345"),
    ("1234", "****"),
    ("12", "****"),
    ("abc", "****"),
    ("110", "****"),
])
def test_mask_short_strings(phone, masked):
    assert mask_phone(phone) == masked


@pytest.mark.parametrize("empty", [None, ""])
def test_mask_phone_passes_empty_through(empty):
    assert mask_phone(empty) == empty


@pytest.mark.parametrize("name, masked", [
    ("张三丰", "张**"),
    ("李四", "李*"),
    ("Li Wei", "L*****"),
    ("王", "王"),
    (None, None),
    ("", ""),
])
def test_mask_name(name, masked):
    assert mask_name(name) == masked


# ----------------------------------------------------------------------- scrub_text


@pytest.mark.parametrize("text, expected", [
    ("我的电话13812345678请回电", "我的电话138****5678请回电"),
    ("电话：13812345678。", "电话：138****5678。"),
    ("请打+86 139-8765-4321找我", "请打139****4321找我"),
    ("13812345678、13987654321都可以", "138****5678、139****4321都可以"),
    ("call 138 1234 5678 after 6pm", "call 138****5678 after 6pm"),
    ("座机010-12345678转分机", "座机*******5678转分机"),
    ("13812345678", "138****5678"),
    ("回电0086 138 1234 5678", "回电138****5678"),
    # Residents writing in English give British and North American numbers.
    ("Please ring me on 07700 900123 after six", "Please ring me on *******0123 after six"),
    ("mobile 07700900123.", "mobile *******0123."),
    ("call +44 7700 900123", "call ********0123"),
    ("landline (020) 7946 0958", "landline *******0958"),
    ("+44 (0)20 7946 0958 any time", "*********0958 any time"),
    ("0161 496 0000", "*******0000"),
    ("my cell is (415) 555-0132", "my cell is ******0132"),
    ("text 415-555-0132 or 415.555.0132", "text ******0132 or ******0132"),
    ("+1 415 555 0132", "*******0132"),
])
def test_scrub_text_masks_phones_inside_text(text, expected):
    assert scrub_text(text) == expected


@pytest.mark.parametrize("text", [
    "2026年11月21日报修，日期20261121",
    "工单WH-20261121-0001已受理",
    "WH-20261121-0001",
    "编号123456789012",
    "卡号138123456789",
    "门牌号12楼1203室，邮编100011",
    "时间 2026-11-21 09:30",
    "温度38度，湿度13%",
    "reference 4155550132",
    "it cost 300 200 1000 yuan in all",
    "flat 12, 3 Acacia Road, since 1998 2004",
    "lat 39.9042 long 116.4074",
    "",
])
def test_scrub_text_leaves_other_digit_runs_alone(text):
    assert scrub_text(text) == text


def test_scrub_text_masks_phone_next_to_issue_id():
    text = "WH-20261121-0001 居民电话13812345678"
    assert scrub_text(text) == "WH-20261121-0001 居民电话138****5678"


# ---------------------------------------------------------------------------- scrub


def test_scrub_masks_personal_keys_and_phones_in_nested_values():
    event = {
        "issue_id": "WH-20261121-0001",
        "contact": {"name": "张三丰", "phone": "13812345678"},
        "recipients": [{"resident_name": "李四", "resident_phone": "+86 139-8765-4321"}],
        "note": "居民说电话13812345678随时可打",
        "agency_name": "和平里供电所",
        "count": 3,
        "ok": True,
        "missing": None,
    }
    assert scrub(event) == {
        "issue_id": "WH-20261121-0001",
        "contact": {"name": "张**", "phone": "138****5678"},
        "recipients": [{"resident_name": "李*", "resident_phone": "139****4321"}],
        "note": "居民说电话138****5678随时可打",
        "agency_name": "和平里供电所",
        "count": 3,
        "ok": True,
        "missing": None,
    }


def test_scrub_does_not_mutate_its_input():
    data = {"contact": {"phone": "13812345678"}, "items": ["13812345678"]}
    scrub(data)
    assert data == {"contact": {"phone": "13812345678"}, "items": ["13812345678"]}


def test_scrub_recurses_lists_and_keeps_tuples():
    assert scrub(["a 13812345678", ["13987654321"], 5]) == [
        "a 138****5678", ["139****4321"], 5]
    result = scrub(("13812345678", "x"))
    assert isinstance(result, tuple)
    assert result == ("138****5678", "x")


def test_scrub_masks_known_names_verbatim_in_free_text():
    text = {"message": "张三丰反映楼道灯不亮，张三丰电话13812345678"}
    assert scrub(text, frozenset({"张三丰"})) == {
        "message": "张**反映楼道灯不亮，张**电话138****5678"}
    assert scrub(text)["message"].startswith("张三丰")


def test_scrub_masks_a_whole_name_before_its_parts_whatever_the_set_order():
    # {"Wei Li", "Wei"} (a name and its part, as open311's names_of gives them): masking
    # "Wei" first left "W** Li", the family name in clear, in some processes.
    # A set's order cannot be chosen, so both orders are given as tuples.
    for names in (("Wei", "Wei Li"), ("Wei Li", "Wei")):
        assert scrub("已告知Wei Li，Wei说好", names) == "已告知W*****，W**说好"
    # What a set's order cannot change, whatever it is: longest first, then by text.
    assert scrub("Ann Lee", frozenset({"Lee", "Ann Lee", "Ann"})) == "A******"


def test_scrub_leaves_non_string_scalars_and_keys_alone():
    assert scrub(42) == 42
    assert scrub(None) is None
    assert scrub({1: "13812345678"}) == {1: "138****5678"}


def test_scrub_text_masks_full_width_phone_digits():
    text = "我的电话１３８１２３４５６７８请回电"
    assert "１２３４" not in scrub_text(text)


# Residents type numbers in their own script: any Unicode decimal digit is read as the
# ASCII one it stands for, and the rest of the text keeps its own (invented numbers).
@pytest.mark.parametrize(("text", "expected"), [
    ("اتصل بي على ١٣٨١٢٣٤٥٦٧٨ شكرا", "اتصل بي على 138****5678 شكرا"),
    ("الطابق ٣، هاتف ١٣٨ ١٢٣٤ ٥٦٧٨", "الطابق ٣، هاتف 138****5678"),
    ("شماره ۱۳۹۸۷۶۵۴۳۲۱", "شماره 139****4321"),
    ("फोन ०२०-७९४६०९५८ पर", "फोन *******0958 पर"),
    ("ফোন ০৭৭০০ ৯০০১২৩", "ফোন *******0123"),
    ("โทร (๔๑๕) ๕๕๕-๐๑๓๒", "โทร ******0132"),
    ("mixed 138١٢٣٤5678 and WH-20261121-0001", "mixed 138****5678 and WH-20261121-0001"),
    ("\U0001d7cf\U0001d7d1\U0001d7d6\U0001d7cf\U0001d7d0\U0001d7d1\U0001d7d2"
     "\U0001d7d3\U0001d7d4\U0001d7d5\U0001d7d6", "138****5678"),  # mathematical bold
])
def test_scrub_text_masks_phones_in_any_scripts_digits(text, expected):
    from shared.privacy import _may_hold_phone, scrub_fields

    assert scrub_text(text) == expected
    assert _may_hold_phone(text)
    assert scrub_fields({"note": text, "at": "x"}, exempt="at")["note"] == expected


@pytest.mark.parametrize("text", ["الطابق ٣ الشقة ١٢", "السنة ٢٠٢٦-١١-٢١", "कमरा १२०३"])
def test_other_scripts_digits_that_are_no_phone_stay_as_written(text):
    assert scrub_text(text) == text


def test_mask_phone_reads_any_scripts_digits():
    assert mask_phone("١٣٨١٢٣٤٥٦٧٨") == "138****5678"
    assert mask_phone("०२०-७९४६०९५८") == "*******0958"


# Text the shortcut in scrub_text skips (no "@", no run of ten digits and separators) must be
# text the full patterns would have left alone. The generator puts phone-shaped
# pieces (mobiles and landlines with any separators, digit groups, "+86", "@")
# into noise, so real phones in every spelling come up.
def _digits(n: int, first: str = "0123456789"):
    return st.tuples(st.sampled_from(first), *[st.sampled_from("0123456789")] * (n - 1)
                     ).map("".join)


_SEP = st.sampled_from(["", "-", " ", "　", "－"])
_TO_OTHER_SCRIPT = str.maketrans("0123456789", "٠١٢٣٤५६७८९")
_MOBILE = st.tuples(st.sampled_from(["", "+86", "+86 ", "86-"]), st.just("1"),
                    _digits(2, "3456789"), _SEP, _digits(4), _SEP, _digits(4)).map("".join)
_LANDLINE = st.tuples(st.just("0"), _digits(2, "123456789"), _SEP.filter(bool),
                      _digits(4), _SEP, _digits(4)).map("".join)
_UK_MOBILE = st.tuples(st.sampled_from(["0", "+44 ", "+44", "0044 "]), st.just("7"),
                       _digits(3), st.sampled_from(["", " ", "-"]), _digits(6)).map("".join)
_NANP = st.tuples(st.sampled_from(["", "+1 "]), st.sampled_from(["(415) ", "415-", "415."]),
                  _digits(3, "23456789"), st.sampled_from(["-", ".", " "]), _digits(4)
                  ).map("".join)
# An issue id, and what comes near one: the shortcut skips an issue id's digits.
_ISSUE_ID = st.tuples(st.sampled_from(["WH-", "WH-", "+", "0044", "+44", ""]), _digits(8),
                      st.sampled_from(["-", "-", " "]), _digits(4)).map("".join)
_PIECE = st.one_of(_MOBILE, _LANDLINE, _UK_MOBILE, _NANP, _ISSUE_ID, _digits(1), _digits(2),
                   _digits(3), _digits(4),
                   st.sampled_from(["-", " ", "@", "a.b", "tel:", "楼", "x", "(", ")", ".",
                                    "WH-", "٣"]),
                   # the same phones in other scripts' digits (Arabic-Indic, Devanagari)
                   st.one_of(_MOBILE, _LANDLINE, _UK_MOBILE, _NANP).map(
                       lambda p: p.translate(_TO_OTHER_SCRIPT)))


@settings(max_examples=1000, deadline=None)
@given(st.lists(_PIECE, max_size=6).map("".join))
def test_scrub_text_shortcut_never_skips_what_the_full_patterns_mask(text):
    from shared.privacy import _EMAIL, _PHONE, mask_email, mask_phone

    # The patterns read every script's digits as ASCII ones: compared with them so read.
    ascii_digits = str.maketrans({c: str(i) for i, c in enumerate("٠١٢٣٤५६७८९")})
    full = _PHONE.sub(lambda m: mask_phone(m.group(0)) or "",
                      _EMAIL.sub(lambda m: mask_email(m.group(0)) or "", text
                                 ).translate(ascii_digits))
    assert scrub_text(text).translate(ascii_digits) == full


def test_an_issue_id_is_no_phone_and_costs_no_full_search():
    from shared.privacy import _MAYBE_PHONE

    assert _MAYBE_PHONE.search("WH-20261121-0001") is None
    assert _MAYBE_PHONE.search("/issues/WH-20261121-0001/feedback") is None
    # digits next to it, or a phone written as one, still go through the full patterns
    assert _MAYBE_PHONE.search("WH-20261121-0001 138 1234 5678")
    assert scrub_text("WH-20261121-13812345678") == "WH-20261121-138****5678"
    assert scrub_text("WH-00447700-900123") == "WH-**********0123"


_LINE = {"logger": "whistle.agency", "call_id": "agency.x.8f0c1a6e-1234-4c3e",
         "trace_id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "issue_id": "WH-20261121-0001",
         "duplicate": False, "count": 3, "level": "info",
         "timestamp": "2026-11-21T08:30:05.123456Z"}


@pytest.mark.parametrize("extra", [
    {},
    {"note": "回电 138 1234 5678"},
    {"note": "１３８１２３４５６７８"},
    {"mail": "tom.baker@example.org"},
    {"auth": "Bearer eyJhbGciOi.eyJzdWIi.c2ln"},
    {"pasted": "o311_" + "k" * 43},
    {"uri": "amqp://whistle:s3cr#t@rabbit-b:5672/"},
    {"contact": {"name": "赵大爷", "phone": "13700009999"}},
    {"args": ["13700009999", ("王五", "010-12345678")]},
    {"exception": "Traceback ...\nRuntimeError: could not call 13700009999"},
])
def test_scrub_fields_gives_what_scrubbing_each_value_gives(extra):
    from shared.privacy import scrub_fields

    line = {**_LINE, **extra}
    expected = {k: v if k == "timestamp" else scrub({k: v})[k] for k, v in line.items()}
    assert scrub_fields(dict(line), exempt="timestamp") == expected
    assert list(scrub_fields(dict(line), exempt="timestamp")) == list(line)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["a", "b", "timestamp", "phone", "name"]),
                       st.one_of(st.lists(_PIECE, max_size=4).map("".join), st.none(),
                                 st.integers(), st.dictionaries(
                                     st.sampled_from(["phone", "name", "x"]),
                                     st.lists(_PIECE, max_size=3).map("".join))),
                       max_size=5))
def test_scrub_fields_is_scrub_of_each_value(line):
    from shared.privacy import scrub_fields

    expected = {k: v if k == "timestamp" else scrub({k: v})[k] for k, v in line.items()}
    assert scrub_fields(dict(line), exempt="timestamp") == expected


# The cheap check of a whole line (shared.privacy._may_hold_phone) against the pattern it
# stands in for: on ASCII text it may say yes where the pattern finds nothing, never the
# reverse. Pieces: everything above, the hex and uuid ids a worker's line carries (a
# quarter of them hold a run of digits and hyphens), issue ids and near misses, full-width
# digits, and separators that end or join runs.
_TO_FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
_HEX = st.text("0123456789abcdef-", min_size=1, max_size=40)
_UUID = st.uuids().map(str)
_ID_PIECE = st.one_of(
    _PIECE, _HEX, _UUID, st.uuids().map(lambda u: u.hex), _ISSUE_ID,
    _ISSUE_ID.map(lambda i: i.translate(_TO_FULL_WIDTH)), _MOBILE.map(
        lambda m: m.translate(_TO_FULL_WIDTH)),
    st.sampled_from(["WH", "WH-", "H", "W", "\n", ".", "(", ")", " ", "-", "x", "WH-2026",
                     "eyJ", "o311_", "@"]))


@settings(max_examples=3000, deadline=None)
@given(st.lists(_ID_PIECE, max_size=8).map("".join))
def test_the_cheap_check_never_lets_through_what_the_pattern_finds(text):
    from shared.privacy import _MAYBE_PHONE, _may_hold_phone

    if _MAYBE_PHONE.search(text):
        assert _may_hold_phone(text)


def _log_line_fields(call_uuid, trace_uuid, issue_id, note, contact):
    fields = {"logger": "whistle.agency", "service": "agency",
              "entrypoint": "record_assignment",
              "call_id": f"agency.record_assignment.{call_uuid}", "trace_id": trace_uuid.hex,
              "issue_id": issue_id, "agency": "gas", "duplicate": False}
    if note is not None:
        fields["note"] = note
    if contact is not None:
        fields["contact"] = contact
    return {**fields, "event": "assignment_delivered", "level": "info",
            "timestamp": "2026-11-21T08:30:05.123456Z"}


_NAME = st.sampled_from(["赵大爷", "王五", "Li Wei", "Tom Baker", "张三丰"])


# A worker's line, as the pipeline gives it to the scrubber, through scrub_fields and
# the long way (each value scrubbed on its own): the same values in the same order,
# whatever ids were drawn and whatever a resident typed (phones in ASCII or full-width
# digits, names in a contact, links with a token).
@settings(max_examples=1000, deadline=None)
@given(st.uuids(), st.uuids(), st.one_of(_ISSUE_ID, st.just("WH-20261121-0001")),
       st.one_of(st.none(), st.lists(_ID_PIECE, max_size=5).map("".join),
                 st.builds(lambda t: f"http://x/issues/WH-20261121-0001/feedback?token={t}",
                           st.sampled_from(["eyJhbGciOi.eyJzdWIi.c2ln", "abc"]))),
       st.one_of(st.none(), st.fixed_dictionaries({"name": _NAME, "phone": _MOBILE})))
def test_a_worker_line_is_scrubbed_as_each_value_would_be(call_uuid, trace_uuid, issue_id,
                                                            note, contact):
    from shared.privacy import scrub_fields

    line = _log_line_fields(call_uuid, trace_uuid, issue_id, note, contact)
    expected = {k: v if k == "timestamp" else scrub({k: v})[k] for k, v in line.items()}
    scrubbed = scrub_fields(dict(line), exempt="timestamp")
    assert scrubbed == expected
    assert list(scrubbed) == list(line)


# A call id's groups can read as a mobile written with hyphens ("…f153-1340-4028…");
# masking part of it broke the id that joins a call's log lines up.
@settings(max_examples=2000, deadline=None)
@given(st.uuids(), st.sampled_from(["intake.open311_updates.{}", "{}", "trace {} done"]))
def test_a_uuid_is_never_masked(uuid, shape):
    text = shape.format(uuid)
    assert scrub_text(text) == text
    assert scrub_text(text.upper()) == text.upper()


def test_a_uuid_that_reads_as_a_phone_stays_whole_and_phones_beside_it_do_not():
    call_id = "07a3f153-1340-4028-9c1e-1391234567aa"
    assert scrub_text(f"intake.open311_updates.{call_id}") == f"intake.open311_updates.{call_id}"
    assert scrub_text(f"{call_id} 居民153-1340-4028") == f"{call_id} 居民153****4028"
    # Not a UUID (a last group of 13), so what reads as a phone in it is masked.
    assert scrub_text("07a3f153-1340-4028-9c1e-13912345678ab") == (
        "07a3f153****4028-9c1e-139****5678ab")


def test_tokens_are_cut_out_of_free_text_and_token_fields():
    staff = issue_token("power", "p-1", "s" * 40)
    rating = issue_feedback_token("WH-20261121-0001", "WH-20261121-0001", 0, "s" * 40, 60)
    link = f"http://x/issues/WH-20261121-0001/feedback?token={rating}"
    text = scrub_text(f"Bearer {staff} and {link} end")
    assert "eyJ" not in text
    assert text == ("Bearer [redacted] and "
                    "http://x/issues/WH-20261121-0001/feedback?token=[redacted] end")
    assert scrub({"token": staff, "args": [staff]}) == {"token": "[redacted]",
                                                        "args": ["[redacted]"]}


def test_an_open311_api_key_pasted_into_free_text_is_cut_out():
    """A key pasted into a description by mistake went out on Open311's public reads."""
    import secrets

    from services.intake.open311.clients import KEY_PREFIX

    key = KEY_PREFIX + secrets.token_urlsafe(32)
    assert scrub_text(f"路灯不亮 key={key}，请处理") == "路灯不亮 key=[redacted]，请处理"
    assert scrub_text("o311_ is the prefix of a key") == "o311_ is the prefix of a key"


def test_masking_a_masked_contact_changes_nothing():
    """An erased contact keeps only its masked form, which is shown as it is."""
    from shared.privacy import mask_email, mask_name, mask_phone

    for mask, value in ((mask_phone, "13812345678"), (mask_phone, "010-12345678"),
                        (mask_name, "孙大爷"), (mask_email, "tom.baker@example.org")):
        assert mask(mask(value)) == mask(value)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.one_of(_PIECE, st.sampled_from(["+", "＋", "０", "1", "7", "44", "(0)"])),
                max_size=8).map("".join))
def test_the_phone_patterns_start_check_turns_away_no_match(text):
    import re

    from shared import privacy

    alternatives = privacy._PHONE.pattern.removeprefix(privacy._PHONE_START + "(?:")
    without = re.compile(alternatives.removesuffix(")"))
    assert [m.span() for m in privacy._PHONE.finditer(text)] == [
        m.span() for m in without.finditer(text)]


@settings(max_examples=1000, deadline=None)
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1),
                    timezones=st.just(UTC)))
def test_scrubbing_leaves_every_audit_entrys_time_as_it_is(moment):
    # shared.guard writes an audit entry's "at" without scrubbing it: what scrubbing gave.
    text = moment.isoformat()
    assert scrub(text) == text


def test_an_audit_entry_is_what_scrubbing_all_of_it_gave():
    from shared.guard import ApiClient, Guard, _Audit

    guard = Guard()
    guard._who_verified = {}
    secret = "s" * 32
    for principal in (verify_token(issue_token("desk", "13812345678", secret), secret),
                      ApiClient("fixmystreet 13812345678")):
        for issue_id in ("WH-20261121-0001", "WH-20261121-12345", "13812345678", None):
            fields = guard._entry_fields(_Audit(principal, "issue.submit", issue_id), 201)
            long_way = scrub({"at": fields["at"], "action": "issue.submit", "status": "201"})
            long_way.update(scrub(principal.audit_fields()))
            if issue_id:
                long_way["issue_id"] = scrub(audited_issue_id(issue_id))
            assert list(fields.items()) == list(long_way.items())


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECE, max_size=6).map("".join))
def test_scrub_without_names_is_scrub_text(text):
    # scrub returns early when it has no names to mask: what the names' loop left.
    assert scrub(text) == scrub(text, frozenset({""})) == scrub_text(text)



@settings(max_examples=500, deadline=None)
@given(st.one_of(st.integers(), st.floats(allow_nan=True),
                 st.lists(_PIECE, max_size=4).map("".join).map(str.encode),
                 st.lists(_PIECE, max_size=4).map("".join).map(RuntimeError)))
def test_a_value_that_is_not_text_is_masked_as_its_text_would_be(value):
    # a log line shows such a value as its str(): what it shows is that text scrubbed
    shown = scrub(value)
    if isinstance(value, int | float):  # a number stays one unless its digits are a phone
        assert shown is value if scrub_text(str(value)) == str(value) else (
            shown == scrub_text(str(value)))
    else:
        assert shown == scrub_text(str(value))


def test_a_set_is_masked_item_by_item():
    assert sorted(scrub({"13912345678", "ok"})) == ["139****5678", "ok"]


def test_a_model_or_dataclass_without_a_plain_form_is_masked_as_its_text():
    # a log line must never raise: a field asdict cannot copy leaves the object's text
    import dataclasses

    @dataclasses.dataclass
    class Held:
        phone: str
        pending: object

    shown = scrub(Held("13912345678", (n for n in range(3))))  # a generator: no deepcopy
    assert isinstance(shown, str) and "139****5678" in shown and "13912345678" not in shown
    assert "Held" in scrub(Held)


# ------------------------------------------------------------------- a dict's keys


def test_a_dicts_keys_are_masked_as_its_values_are():
    # Values were scrubbed and keys not: {"13912345678": 1} reached the log in clear.
    import orjson

    rating = issue_feedback_token("WH-20261121-0001", "WH-20261121-0001", 0, "s" * 40, 60)
    link = f"http://x/issues/WH-20261121-0001/feedback?token={rating}"
    seen = {"13912345678": 1, 13700009999: 2, link: 3, "tom.baker@example.org": 4,
            "ok": {"回电 010-12345678": "x"}, 7: "seven", None: 0}
    shown = scrub(seen)
    assert shown == {"139****5678": 1, "137****9999": 2,
                     "http://x/issues/WH-20261121-0001/feedback?token=[redacted]": 3,
                     "t********@example.org": 4, "ok": {"回电 *******5678": "x"},
                     7: "seven", None: 0}
    assert scrub({"张三丰的电话": 1}, frozenset({"张三丰"})) == {"张**的电话": 1}
    text = orjson.dumps(shown, option=orjson.OPT_NON_STR_KEYS).decode()
    assert "13912345678" not in text and "13700009999" not in text and rating not in text


def test_keys_that_mask_alike_are_all_kept():
    # 13912345678 and 13900005678 both show as 139****5678: neither entry is dropped.
    shown = scrub({"13912345678": 1, 13900005678: 2, "139****5678 #2": 3, "+86 139 1111 5678": 4})
    assert shown == {"139****5678": 1, "139****5678 #2": 2, "139****5678 #2 #2": 3,
                     "139****5678 #3": 4}


def test_a_key_json_has_no_form_for_becomes_its_masked_text():
    # A tuple or a timedelta key made the log line's renderer raise; as text it renders.
    from datetime import timedelta
    from enum import Enum

    class Line(Enum):
        desk = "13912345678"

    shown = scrub({(1, "13912345678"): "a", timedelta(seconds=1): "b", Line.desk: "c",
                   b"13700009999": "d", datetime(2026, 11, 21, tzinfo=UTC): "e", True: "f"})
    assert shown == {"(1, '139****5678')": "a", "0:00:01": "b", "139****5678": "c",
                     "b'137****9999'": "d", "2026-11-21T00:00:00+00:00": "e", True: "f"}
    import json

    json.dumps(shown)  # every key is one JSON has a form for


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.lists(_PIECE, max_size=4).map("".join), st.integers(),
                          st.integers(13000000000, 19999999999)), max_size=6))
def test_scrubbing_a_dicts_keys_masks_each_and_keeps_every_entry(keys):
    seen = {key: i for i, key in enumerate(keys)}  # the values tell the entries apart
    shown = scrub(seen)
    assert sorted(shown.values()) == sorted(seen.values())
    original = {i: key for key, i in seen.items()}
    for key, i in shown.items():  # each key as its text scrubbed, maybe with " #n"
        text = str(original[i])
        masked = scrub_text(text) if isinstance(original[i], str) or scrub_text(
            text) != text else original[i]
        assert key == masked or (isinstance(key, str) and key.startswith(f"{masked} #"))


def test_erasing_a_contact_masks_it_in_the_residents_own_words_and_nothing_else():
    from shared.privacy import contact_erased_from

    record = {"description": "我叫吴桂芳，电话13822223333，邮箱wgf@example.org，吴桂芳家门口黑",
              "received_at": "2026-12-07T10:31:23.451923Z", "lat": 39.38, "reopen_count": 0,
              "timeline": [{"detail": "accepted via hotline", "agency": None}],
              "ratings": [{"comment": "Li Wei says thanks, Wei; Lisa too"}]}
    erased = contact_erased_from(record, {"name": "吴桂芳", "phone": "13822223333",
                                          "email": "wgf@example.org"})
    assert erased["description"] == "我叫吴**，电话138****3333，邮箱w**@example.org，吴**家门口黑"
    assert {k: v for k, v in erased.items() if k != "description"} == \
        {k: v for k, v in record.items() if k != "description"}
    latin = contact_erased_from(record, {"name": "Li Wei"})
    # The parts of three letters or more too, as Open311 masks them; "Li" hides in "Lisa".
    assert latin["ratings"][0]["comment"] == "L***** says thanks, W**; Lisa too"
    assert contact_erased_from(record, {}) == record
    assert contact_erased_from(record, None) == record

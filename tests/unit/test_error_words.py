"""A refused field's message says in plain words what to give (``shared.errors``)."""

import pytest

from services.intake.stats import StatsWindow
from shared.contracts import ExplainRoute
from shared.errors import InvalidPayload
from shared.web import validate


@pytest.mark.parametrize(("model", "given", "field", "says"), [
    # pydantic's "Input should have timezone info": a desk's script sent a bare date
    (StatsWindow, {"since": "2026-12-06"}, "since",
     "give a date and time with its zone, e.g. 2026-12-06T00:00:00+08:00"),
    (StatsWindow, {"since": "yesterday"}, "since",
     "give a date and time with its zone, e.g. 2026-12-06T00:00:00+08:00"),
    # pydantic's "String should have at least 1 character"
    (ExplainRoute, {"text": ""}, "text", "is empty: give at least 1 character"),
    (ExplainRoute, {"text": "x" * 4001}, "text", "too long: give at most 4000 characters"),
    (ExplainRoute, {}, "text", "is missing: give a value"),
])
def test_a_refused_field_is_named_with_what_to_give(model, given, field, says):
    with pytest.raises(InvalidPayload) as refused:
        validate(model, given)
    assert {"field": field, "message": says} in [
        {"field": f["field"], "message": f["message"]} for f in refused.value.errors]
    assert field in str(refused.value)


def test_words_that_need_a_number_pydantic_did_not_give_are_pydantics_own():
    from shared.errors import _message

    assert _message({"type": "greater_than_equal", "loc": ("n",), "ctx": {},
                     "msg": "Input should be greater than or equal to 1"}) == \
        "Input should be greater than or equal to 1"
    assert _message({"type": "greater_than_equal", "loc": ("n",), "ctx": {"ge": 1},
                     "msg": "x"}) == "give a number of at least 1"

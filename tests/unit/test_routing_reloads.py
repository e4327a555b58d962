"""Which reloads a routing process follows: states compared, each wanted value tried once."""

from services.routing.reloads import MODEL, RULES, to_reload


def test_a_process_holding_what_is_wanted_has_nothing_to_do():
    # Started after the reload: it read the new files itself.
    assert to_reload({MODEL: "v2", RULES: "r2"}, {MODEL: "v2", RULES: "r2"}, {}) == []


def test_what_another_process_reloaded_is_reloaded_here():
    assert to_reload({MODEL: "v1", RULES: "r1"}, {MODEL: "v2", RULES: "r2"}, {}) == [MODEL, RULES]


def test_nothing_asked_yet_means_nothing_to_do():
    assert to_reload({MODEL: "v1", RULES: "r1"}, {}, {}) == []


def test_a_wanted_value_this_process_cannot_reach_is_not_tried_again_and_again():
    # Its own artefact is pinned elsewhere: the reload gave v1 again; no loop every 2 s.
    assert to_reload({MODEL: "v1"}, {MODEL: "v2"}, {MODEL: "v2"}) == []
    # The next reload asked for is tried.
    assert to_reload({MODEL: "v1"}, {MODEL: "v3"}, {MODEL: "v2"}) == [MODEL]

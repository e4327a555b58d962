"""The browser helper's test for "the browser has left this page" (tests/support/browser.py)."""

import pytest
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

from tests.support.browser import _gone


class Node:
    """An element of a page whose driver answers ``is_enabled`` with ``answer``."""

    def __init__(self, answer: Exception | None = None):
        self.answer = answer

    def is_enabled(self) -> bool:
        if self.answer is not None:
            raise self.answer
        return True


def test_a_node_of_the_page_still_shown_is_not_gone():
    assert _gone(Node()) is False


@pytest.mark.parametrize("answer", [
    StaleElementReferenceException("stale element reference: stale element not found"),
    # Chromium's driver, asked at the moment the new page replaces the old one
    WebDriverException('unknown error: unhandled inspector error: {"code":-32000,"message":'
                       '"Node with given id does not belong to the document"}'),
])
def test_a_node_of_a_page_left_behind_is_gone_whichever_way_the_driver_says_so(answer):
    assert _gone(Node(answer)) is True


def test_any_other_error_of_the_driver_is_not_taken_for_a_new_page():
    with pytest.raises(WebDriverException, match="chrome not reachable"):
        _gone(Node(WebDriverException("chrome not reachable")))

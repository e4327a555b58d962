"""What the CLI prints through rich: data is shown as it is, never read as markup."""

from rich.console import Console

from whistle.demo import case_panel


def test_demo_shows_redacted_links_as_they_are():
    console = Console(record=True, width=200)
    console.print(case_panel({"title": "[bold]x", "issue_id": "WH-1", "status": "resolved",
                              "category": "pipe_leak", "priority": "high",
                              "agencies": [("water", "lead")],
                              "messages": ["请评价: http://w/feedback?token=[redacted]"]}))
    text = console.export_text()
    assert "feedback?token=[redacted]" in text and "[bold]x" in text

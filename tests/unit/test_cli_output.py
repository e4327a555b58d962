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


def test_python_m_whistle_runs_this_checkouts_cli():
    # A worktree or a CI clone: `python -m whistle` from its folder runs its own code, where
    # the `whistle` script runs the code the virtualenv installed.
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "whistle", "token", "--help"], cwd=root,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "Usage: python -m whistle token" in done.stdout

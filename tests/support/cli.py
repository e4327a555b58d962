"""Running the CLI in-process and reading its one-line errors."""

from click.testing import CliRunner

from whistle.cli import cli


def run(*args, env=None):
    """``whistle ARGS``; an exception other than the exit is a traceback: a failure."""
    result = CliRunner().invoke(cli, list(args), env=env)
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit), result.exception
    return result


def one_error_line(result) -> str:
    """The result's error: its one ``Error:`` line (click adds the usage above it)."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or line.startswith("whistle")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    return errors[0]

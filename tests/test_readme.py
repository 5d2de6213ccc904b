"""README.md's two commands are the ones CI runs, and its claims are measured."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def code_after(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(heading, 1)[1]
    return re.search(r"```(?:bash|sh)?\n(.*?)```", section, re.S).group(1).strip()


def test_readme_has_exactly_two_setup_commands():
    setup = code_after("## Set up and run")
    tests = code_after("## Run the tests")
    assert (
        len(setup.splitlines()) == 1 and "pip install" in setup and "nudge-rag benchmark" in setup
    )
    assert len(tests.splitlines()) == 1 and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert code_after("## Run the tests") in ci.splitlines()

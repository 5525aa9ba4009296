"""The README's two commands are what a fresh machine runs, and CI runs the test one."""

from __future__ import annotations

import re

from tests.conftest import REPO


def _two_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Two commands") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readmes_test_command_last():
    demo, test = _two_commands()
    assert demo == "bash scripts/demo.sh" and test == "bash scripts/test.sh"
    for command in (demo, test):
        assert (REPO / command.split()[1]).is_file(), command
    lines = [
        line.split("#")[0].strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    assert lines[-1] == test  # the last command CI runs, not commented out, not skippable

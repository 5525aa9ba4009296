"""Run Snakemake on a test's working folder, and read the jobs a dry run plans."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def snakemake(work: Path, configfile: str, *args: str) -> subprocess.CompletedProcess:
    """The repo's workflow in ``work`` with ``configfile`` (relative to ``work``), no MLflow
    URI from the environment, this interpreter's tools first on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    cmd += ["--directory", str(work), *args, "--configfile", configfile]
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)


def planned(stdout: str, wildcards: str = "subject") -> dict[str, set[str]]:
    """rule -> the values of the ``wildcards`` (a regex alternative, e.g.
    ``subject|bids_prefix``) of its planned jobs, from a dry run's job listing."""
    jobs: dict[str, set[str]] = {}
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:)", stdout):
        rule = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block.strip())
        who = re.search(rf"wildcards: .*(?:{wildcards})=([^,\s]+)", block)
        if rule:
            jobs.setdefault(rule.group(1), set()).update([who.group(1)] if who else [])
    return jobs

"""Each stage is declared once (sr7t.stages) and its rule passes exactly those names; the
runner logs, tracks and reports errors the same way for every stage."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sr7t import paths, stages
from sr7t.config import resolve
from tests.conftest import REPO

STAGE_SCRIPT = "../scripts/stage.py"
# one job's wildcards per rule; every input function of the tiny (demo) cohort is evaluated
WILDCARDS = {"cohort": "tiny", "subject": "sub-01", "field": "7T", "model": "teacher", "k": "1"}
# the inference rules' job: an inference-only cohort (its sheet added by the `rules` fixture)
INFER_WILDCARDS = {"cohort": "routine", "subject": "a", "bids_dir": "sub-a"}
INFER_WILDCARDS |= {"bids_prefix": "sub-a", "res": "4"}


class NoTracker:
    def __getattr__(self, name):
        return lambda *a, **k: None


@pytest.fixture
def untracked(monkeypatch):
    import sr7t.tracking

    monkeypatch.setattr(
        sr7t.tracking, "job_run", lambda *a, **k: contextlib.nullcontext(NoTracker())
    )


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    """The workflow's rules as Snakemake parses them (config/tiny.yaml)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    work = tmp_path_factory.mktemp("parse")
    shutil.copytree(REPO / "config", work / "config")
    (work / "routine.tsv").write_text("subject\tscan_1p5T\na\traw/a_1p5T.nii.gz\n")
    (work / "raw").mkdir()
    (work / "raw" / "a_1p5T.nii.gz").touch()  # exists: the check at start needs no more
    routine = {"source": "samples", "samples": str(work / "routine.tsv")}
    routine["model"] = {"from_cohort": "tiny"}
    (work / "routine.yaml").write_text(json.dumps({"cohorts": {"routine": routine}}))
    configfiles = [Path("config/tiny.yaml"), work / "routine.yaml"]
    # the inference model's checkpoint has run (the report's inputs follow from it)
    info = work / paths.path("infer_model_info", cohort="routine")
    info.parent.mkdir(parents=True)
    info.write_text('{"res_label": "4"}')
    with SnakemakeApi(OutputSettings()) as api:
        wf = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=configfiles),
            snakefile=REPO / "Snakefile",
            workdir=work,
        )
        rules = {r.name: r for r in wf._workflow.rules if r.name != "all"}
        output, _ = rules["infer_model"].expand_output(INFER_WILDCARDS)
        wf._workflow._checkpoints.created_output.update(output)
        yield rules


def _input_names(rule) -> set[str]:
    from snakemake.io import is_flagged
    from snakemake.iocontainers import Wildcards

    names = set(rule.input._names)
    for item in rule.input:
        item = getattr(item, "_file", item)
        if is_flagged(item, "unpack"):
            fn = getattr(item, "callable", None) or item
            wildcards = INFER_WILDCARDS if rule.name.startswith("infer") else WILDCARDS
            names |= set(fn(Wildcards(fromdict=wildcards)))
    return names


def test_every_rule_runs_its_stage_with_exactly_the_declared_names(rules):
    assert set(rules) == set(stages.STAGES)
    for name, rule in rules.items():
        spec = stages.STAGES[name]
        assert rule.script == STAGE_SCRIPT, name
        assert set(rule.output._names) == set(spec.outputs), name
        given = _input_names(rule)
        assert given <= set(spec.inputs), (name, given - set(spec.inputs))
        assert set(spec.inputs) - spec.optional <= given, name
        params = set(rule.params._names)
        assert params - {"cfg"} == set(spec.params), name
        assert "cfg" in params or not spec.config, name


def test_stage_config_is_the_declared_sections():
    cfg = resolve({})
    assert stages.stage_config("n4", cfg) == cfg["preprocess"]["n4"]
    assert stages.stage_config("teacher", cfg) == {"teacher": cfg["teacher"], "data": cfg["data"]}
    assert stages.stage_config("resolved_config", cfg) is cfg


def test_undeclared_names_are_refused(tmp_path):
    with pytest.raises(TypeError, match=r"stage n4: inputs \['image'\] .*missing \['scan'\]"):
        stages.run("n4", {"image": "x.nii.gz"}, {}, resolve({})["preprocess"]["n4"])


def _rows(tmp_path) -> Path:
    from sr7t.cohort.ingest import MANIFEST_COLUMNS

    row = {c: "x" for c in MANIFEST_COLUMNS if c != "split"} | {"subject": "a", "field": "7T"}
    path = tmp_path / "a_scans.tsv"
    pd.DataFrame([row]).to_csv(path, sep="\t", index=False)
    return path


def test_runner_sends_output_to_the_log_and_one_line_to_the_console(tmp_path, untracked, capfd):
    log = tmp_path / "logs" / "ingest.log"
    missing = tmp_path / "gone_7T.nii.gz"
    cfg = {"scan_1p5T": str(missing), "scan_7T": str(missing)}
    outputs = {k: tmp_path / k for k in ("scan_1p5T", "scan_7T", "rows")}
    status = stages.run("ingest", {}, outputs, cfg, {"subject": "a"}, log_file=log)
    assert status == stages.EXIT_USER_ERROR
    line = f"sr7t ingest: subject a: 1.5T scan file {missing} does not exist"
    assert capfd.readouterr().err.strip().splitlines() == [line]
    text = log.read_text()
    assert "Traceback" in text and text.strip().splitlines()[-1] == line
    # an unexpected error: status 1, and the console line points at the log
    status = stages.run(
        "manifest", {"rows": [tmp_path / "no.tsv"]}, {"manifest": "m"}, {}, {}, 1, log
    )
    err = capfd.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and err[0].endswith(f"(traceback in {log})")


def test_sr7t_stage_runs_a_stage_by_hand(tmp_path, untracked):
    from sr7t import cli

    out = tmp_path / "manifest.tsv"
    argv = [
        "stage",
        "manifest",
        "--input",
        f"rows={_rows(tmp_path)}",
        "--output",
        f"manifest={out}",
    ]
    assert cli.main([*argv, "--cfg", json.dumps({"a": "test"})]) == 0
    assert list(pd.read_csv(out, sep="\t")["split"]) == ["test"]


def test_model_stages_hand_the_whole_config_to_the_trainer(untracked):
    cfg = resolve({})
    sections = stages.stage_config("teacher", cfg)
    job = stages.Job({}, config=cfg)
    assert stages.whole_config("teacher", job, sections) is cfg
    changed = {**sections, "teacher": {**sections["teacher"], "lr": 1.0}}
    with pytest.raises(ValueError, match="differs from the whole config"):
        stages.whole_config("teacher", job, changed)
    with pytest.raises(ValueError, match="whole resolved config"):
        stages.whole_config("teacher", stages.Job({}), sections)
    # the regression baseline depends on the teacher's architecture keys only, not its lr
    assert set(stages.stage_config("regression", cfg)) == {
        "distill",
        "data",
        "num_res_blocks",
        "norm_num_groups",
        "use_guidance",
    }


@pytest.mark.parametrize("n", [1, 2])
def test_threads_are_set_without_importing_torch(n):
    code = (
        "import sys; from sr7t.stages import set_threads; "
        f"set_threads({n}); assert 'torch' not in sys.modules; "
        "import torch; print(torch.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == str(n)

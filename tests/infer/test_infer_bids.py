"""BIDS derivative names, URIs and dataset_description of an inference cohort."""

from __future__ import annotations

import pytest

from sr7t.config import ConfigError
from sr7t.infer import bids


def test_resolution_label_and_entities():
    assert bids.resolution_label(1.2) == "1p2" and bids.resolution_label(2.0) == "2"
    ents = bids.entities({"sub-01": "1p5", "subj_02": None}, "c")
    assert ents["sub-01"] == {"dir": "sub-01/ses-1p5", "prefix": "sub-01_ses-1p5"}
    assert ents["subj_02"] == {"dir": "sub-subj02", "prefix": "sub-subj02"}
    with pytest.raises(ConfigError, match="same BIDS label sub-a1"):
        bids.entities({"a-1": None, "a_1": None}, "c")
    assert bids.session_of("/data/sub-01/ses-1p5/anat/sub-01_ses-1p5_T1w.nii.gz") == "1p5"


def test_bids_input_gets_bids_uris_and_source_datasets(tmp_path):
    root = tmp_path / "bids"
    scan = root / "sub-01" / "ses-1p5" / "anat" / "sub-01_ses-1p5_T1w.nii.gz"
    assert bids.source_uri(scan, root) == "bids:raw:sub-01/ses-1p5/anat/sub-01_ses-1p5_T1w.nii.gz"
    assert bids.source_uri(tmp_path / "x.nii.gz", None) == (tmp_path / "x.nii.gz").as_uri()
    desc = bids.dataset_description("n", "0.1.0", root)
    assert desc["DatasetType"] == "derivative" and desc["BIDSVersion"] == "1.9.0"
    assert desc["GeneratedBy"] == [
        {"Name": "sr7t", "Version": "0.1.0", "Description": desc["GeneratedBy"][0]["Description"]}
    ]
    assert desc["SourceDatasets"] == [{"URL": root.as_uri()}]
    assert desc["DatasetLinks"] == {"raw": root.as_uri()}

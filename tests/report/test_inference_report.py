"""The inference report lists the subjects left out for bad input, with their error."""

from sr7t.io import write_json
from sr7t.report.inference import write_inference_report


def test_left_out_subjects_are_listed_with_their_error(tmp_path):
    info = write_json(tmp_path / "model.json", {"description": "bundle m.pt", "kind": "teacher"})
    line = "subject z: 1.5T scan file /data/z.nii.gz does not exist"
    out = write_inference_report(
        "routine", tmp_path / "a.html", model_info=info, subjects={}, left_out={"z": line}
    )
    html = out.read_text()
    assert "Subjects left out (1)" in html and "<td>z</td>" in html and line in html
    clean = write_inference_report("routine", tmp_path / "b.html", model_info=info, subjects={})
    assert "left out" not in clean.read_text()

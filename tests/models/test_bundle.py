"""Model bundles: a missing, corrupt or foreign model file is one clear line, never a traceback
or PyTorch's advice to unpickle the file's code (``weights_only=False``)."""

import collections
import os

import numpy as np
import pytest
import torch

from sr7t import cli
from sr7t.models.bundle import BUNDLE_FORMAT, BundleError, load_bundle, save_bundle
from sr7t.models.diffusion import Denoiser

ARCH = {
    "channels": [8, 8],
    "attention_levels": [False, False],
    "num_res_blocks": 1,
    "norm_num_groups": 4,
}


def _check(err: BundleError, path) -> None:
    text = str(err)
    assert str(path) in text
    assert "sr7t model bundle" in text
    assert "weights_only=False" not in text
    assert "\n" not in text


def _missing(tmp_path):
    return tmp_path / "nowhere" / "model.pt"


def _random_bytes(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(os.urandom(4096))
    return path


def _truncated(tmp_path):
    model = Denoiser(3, ARCH)
    good = save_bundle(tmp_path / "good.pt", model, {"kind": "teacher"})
    path = tmp_path / "truncated.pt"
    path.write_bytes(good.read_bytes()[:2000])
    return path


def _foreign_dict(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "epoch": 3}, path)
    return path


def _foreign_class(tmp_path):
    path = tmp_path / "pickled_class.pt"
    # an OrderedDict subclass from this test module: not on torch's weights_only allowlist
    torch.save(Custom(w=torch.zeros(2)), path)
    return path


class Custom(collections.OrderedDict):
    pass


@pytest.mark.parametrize(
    "make", [_missing, _random_bytes, _truncated, _foreign_dict, _foreign_class]
)
def test_bad_model_file_is_one_line_naming_it(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(BundleError) as err:
        load_bundle(path, device="cpu")
    _check(err.value, path)
    assert err.value.__cause__ is None  # no chained traceback with PyTorch's text


def test_good_bundle_round_trips(tmp_path):
    model = Denoiser(3, ARCH)
    path = save_bundle(tmp_path / "model.pt", model, {"kind": "teacher", "stage": 0})
    loaded, meta = load_bundle(path, device="cpu")
    assert meta["kind"] == "teacher" and meta["architecture"]["n_condition"] == 3
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_weights_that_do_not_fit_are_a_bundle_error(tmp_path):
    path = save_bundle(tmp_path / "model.pt", Denoiser(3, ARCH), {"kind": "teacher"})
    blob = torch.load(path, weights_only=True)
    blob["meta"]["architecture"]["channels"] = [16, 16]
    torch.save(blob, path)
    with pytest.raises(BundleError, match="do not fit") as err:
        load_bundle(path, device="cpu")
    _check(err.value, path)
    assert blob["format"] == BUNDLE_FORMAT


class _NoTracker:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def log_params(self, *a, **k):
        pass

    def log_metrics(self, *a, **k):
        pass


def test_predict_with_a_foreign_model_exits_2_with_one_line(
    tmp_path, monkeypatch, capsys, write_scan
):
    import sr7t.tracking

    monkeypatch.setattr(sr7t.tracking, "job_run", lambda *a, **k: _NoTracker())
    scan = write_scan("in.nii.gz", np.random.default_rng(0).random((8, 8, 6)).astype(np.float32))
    model = _foreign_class(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["predict", str(scan), str(tmp_path / "out.nii.gz"), "--model", str(model)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"sr7t predict: model {model}: ")
    assert not any("weights_only=False" in line or "Traceback" in line for line in err)
    assert not (tmp_path / "out.nii.gz").exists()


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_predict_refuses_a_rotation_count_below_1_before_any_work(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_:
        cli.main(
            [
                "predict",
                "in.nii.gz",
                str(tmp_path / "o.nii.gz"),
                "--model",
                "m.pt",
                "--rotations",
                value,
            ]
        )
    assert exit_.value.code == 2
    assert "argument --rotations" in capsys.readouterr().err
    assert not (tmp_path / "o.nii.gz").exists()

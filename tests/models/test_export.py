"""``spadfast export``: weights and config only, a quarter of the checkpoint, predictions byte-identical to the run,
and clear refusals."""

import json

import numpy as np
import pytest
import torch

from spadfast import SPADTrainer
from spadfast.cli import main as cli_main
from spadfast.data.synthetic import write_synthetic_folder
from spadfast.infer.segmenter import Segmenter, predict_folder
from spadfast.models.checkpoint import read_checkpoint
from spadfast.models.export import export_model

from ..helpers import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    trainer = SPADTrainer(tiny_config(train_steps=2))
    trainer.fit()
    trainer.save(root / "run")
    write_synthetic_folder(root / "data", 4, 16, seed=2)
    return root


def test_export_is_small_and_predicts_byte_identically(run, tmp_path):
    assert cli_main(["export", "--checkpoint", str(run / "run"), "--out", str(tmp_path / "m.safetensors"),
                     "--labels", "background", "lesion"]) == 0
    export = tmp_path / "m.safetensors"
    assert export.stat().st_size <= (run / "run" / "checkpoint.safetensors").stat().st_size / 3
    tensors, meta = read_checkpoint(export)
    assert meta["kind"] == "export" and meta["class_names"] == ["background", "lesion"]
    assert all(k.startswith("ema.") for k in tensors)
    for source, out in ((run / "run", tmp_path / "a"), (export, tmp_path / "b")):
        predict_folder(Segmenter.from_checkpoint(source), run / "data" / "images", out, steps=2, ensemble=2,
                       uncertainty=True)
    for f in sorted((tmp_path / "a").rglob("*.png")):
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes(), f.name
    half = export_model(run / "run", tmp_path / "h.safetensors", half=True)
    assert half.stat().st_size < export.stat().st_size * 0.6
    x = torch.rand(1, 1, 16, 16) * 2 - 1
    p_half = Segmenter.from_checkpoint(half).segment(x, steps=2, ensemble=2).probs
    p_full = Segmenter.from_checkpoint(export).segment(x, steps=2, ensemble=2).probs
    assert float((p_half - p_full).abs().max()) < 0.05  # float16 weights: close, not identical


def test_export_refusals_name_the_problem(run, tmp_path):
    with pytest.raises(ValueError, match="num_classes"):
        export_model(run / "run", tmp_path / "x.safetensors", class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="safetensors"):
        export_model(run / "run", tmp_path / "x.zip")
    export = export_model(run / "run", tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="export holds weights only"):
        SPADTrainer.from_checkpoint(export)
    broken = tmp_path / "broken.safetensors"
    data = bytearray(export.read_bytes())
    data[-5] ^= 0xFF  # flip a weight byte
    broken.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256|corrupt"):
        Segmenter.from_checkpoint(broken)
    assert json.loads(json.dumps(read_checkpoint(export)[1]["config"]))["num_classes"] == 2
    assert bool(torch.isfinite(Segmenter.from_checkpoint(export).segment(torch.zeros(1, 1, 16, 16), steps=1).probs).all())


def test_segmenter_predicts_arrays_and_paths_as_predict_writes_them(run, tmp_path):
    import cv2

    from spadfast import Segmenter as TopLevel

    segmenter = TopLevel.load(run / "run")
    images = run / "data" / "images"
    predict_folder(segmenter, images, tmp_path / "pred", steps=2, ensemble=2)
    for path in sorted(images.glob("*.png")):
        from_path = segmenter.predict(path, steps=2, ensemble=2)
        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        from_array = segmenter.predict(array, steps=2, ensemble=2, name=path.stem)
        written = cv2.imread(str(tmp_path / "pred" / path.name), cv2.IMREAD_GRAYSCALE) > 0
        assert from_path["mask"].shape == array.shape[:2] and from_path["probs"].dtype == np.float32
        assert np.array_equal(from_path["mask"], written) and np.array_equal(from_array["mask"], written)
        assert np.array_equal(from_path["probs"], from_array["probs"])
    with pytest.raises(ValueError, match="NaN"):
        segmenter.predict(np.full((16, 16), np.nan, np.float32))
    with pytest.raises(ValueError, match="shape"):
        segmenter.predict(np.zeros((2, 16, 16, 1), np.uint8))


def test_an_export_of_another_major_version_is_refused(run, tmp_path):
    from spadfast.models.checkpoint import write_checkpoint

    tensors, meta = read_checkpoint(export_model(run / "run", tmp_path / "m.safetensors"))
    write_checkpoint(tmp_path / "old.safetensors", tensors, {**meta, "spadfast_version": "99.0.0"})
    with pytest.raises(ValueError, match="another major version"):
        Segmenter.load(tmp_path / "old.safetensors")


def test_segmenter_predicts_a_nifti_volume_as_predict_writes_it(tmp_path):
    import nibabel as nib

    from spadfast.data.synthetic_volumes import write_demo_volumes
    from spadfast.infer.volumes import predict_volume_folder

    root = write_demo_volumes(tmp_path / "vols", n_cases=2, shape=(20, 18, 4), num_classes=3, n_test=1)
    trainer = SPADTrainer(tiny_config(num_classes=3, train_steps=1, image_size=16), root)
    trainer.fit()
    trainer.save(tmp_path / "run")
    seg = Segmenter.load(tmp_path / "run")
    images = root / "imagesTs"
    names = predict_volume_folder(seg, images, tmp_path / "pred", steps=2, ensemble=2)
    case = sorted(images.glob("*.nii.gz"))[0]
    out = seg.predict(case, steps=2, ensemble=2)
    written = nib.load(str(tmp_path / "pred" / f"{names[0]}.nii.gz")).get_fdata().astype(np.int64)
    assert out["labels"].shape == written.shape and np.array_equal(out["labels"], written)
    assert out["probs"].shape == (*written.shape, 2) and out["foreground"].dtype == bool
    assert out.mask is out.labels and np.array_equal(out.foreground, written > 0)  # the documented attributes
    from_image = seg.predict(nib.load(str(case)), steps=2, ensemble=2)
    assert from_image["labels"].shape == written.shape


def test_a_model_file_protects_itself_and_a_run_folder_protects_the_run(run, tmp_path, monkeypatch, capsys):
    """Issue 29.5: an export (or ONNX export folder) in the working folder blocks no output beside it."""
    from spadfast.io.paths import check_output_dir, model_inputs

    monkeypatch.chdir(tmp_path)
    assert cli_main(["export", "--checkpoint", str(run / "run"), "--out", "m.safetensors"]) == 0
    images = str(run / "data" / "images")
    assert cli_main(["predict", "--checkpoint", "m.safetensors", "--images", images, "--out", "pred",
                     "--steps", "1", "--ensemble", "1"]) == 0
    assert len(list((tmp_path / "pred").glob("*.png"))) == 4
    for checkpoint in (run / "run", run / "run" / "checkpoint.safetensors"):  # a run is protected whole
        assert cli_main(["predict", "--checkpoint", str(checkpoint), "--images", images, "--out",
                         str(run / "run" / "pred"), "--steps", "1"]) == 2
        assert "would overlap the input" in capsys.readouterr().err
    (tmp_path / "m_onnx").mkdir()  # an ONNX export folder: protected itself, not the folder it lies in
    (tmp_path / "m_onnx" / "spadfast.json").write_text("{}")
    check_output_dir("pred_onnx", "--out", inputs=model_inputs(["m_onnx"]))
    with pytest.raises(ValueError, match="would overlap the input"):
        check_output_dir("m_onnx/pred", "--out", inputs=model_inputs(["m_onnx"]))
    with pytest.raises(ValueError, match="is an existing file"):
        check_output_dir("m.safetensors", "--out", inputs=model_inputs(["m.safetensors"]))


def test_export_never_replaces_a_file_that_is_not_an_earlier_export_of_the_run(run, tmp_path, capsys):
    """Issue 29.12: another run's checkpoint (or any file) survives `export --out` unless --overwrite."""
    other = SPADTrainer(tiny_config(train_steps=1, seed=3))
    other_checkpoint = other.save(tmp_path / "other")
    before = other_checkpoint.read_bytes()
    argv = ["export", "--checkpoint", str(run / "run"), "--out", str(other_checkpoint)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "already exists and is a training checkpoint" in err and "--overwrite" in err
    assert other_checkpoint.read_bytes() == before
    notes = tmp_path / "notes.safetensors"
    notes.write_text("mine")
    with pytest.raises(ValueError, match="not a spadfast export"):
        export_model(run / "run", notes)
    assert notes.read_text() == "mine"
    export_model(other_checkpoint, tmp_path / "o.safetensors")
    with pytest.raises(ValueError, match="the export of another run"):
        export_model(run / "run", tmp_path / "o.safetensors")
    mine = export_model(run / "run", tmp_path / "m.safetensors")
    assert export_model(run / "run", mine, half=True) == mine  # re-exporting the same run replaces its export
    assert read_checkpoint(mine)[1]["half"] is True
    assert cli_main([*argv, "--overwrite"]) == 0
    assert read_checkpoint(other_checkpoint)[1]["kind"] == "export"


def test_onnx_export_accepts_overwrite_and_the_usage_line_lists_export():
    from spadfast.cli import build_parser

    args = build_parser().parse_args(["export", "--format", "onnx", "--checkpoint", "run", "--out", "m_onnx",
                                      "--overwrite"])
    assert args.overwrite is True
    assert "export" in build_parser().format_usage()

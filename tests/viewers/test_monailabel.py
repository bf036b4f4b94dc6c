"""The MONAI Label app (integrations/monailabel): the real server on a free port answers ``/infer`` with the label map
``spadfast predict`` writes for the same NIfTI file, and the uncertainty as a second model.

Needs monailabel 0.8.5 (installed ``--no-deps``) and its server's imports (scripts/bootstrap.sh); skips otherwise.
"""

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("monailabel", reason="monailabel is not installed (scripts/bootstrap.sh installs it --no-deps)")
pytest.importorskip("fastapi", reason="fastapi (MONAI Label's server) is not installed")
pytest.importorskip("uvicorn", reason="uvicorn (MONAI Label's server) is not installed")

from spadfast.cli import main as spadfast_main  # noqa: E402
from spadfast.infer.segmenter import Segmenter  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "integrations" / "monailabel"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def _post(url: str, timeout: float = 120.0) -> bytes:
    request = urllib.request.Request(url, data=b"params=%7B%7D", method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return r.read()


def _nifti(data: bytes, tmp_path: Path, name: str) -> nib.Nifti1Image:
    path = tmp_path / name
    path.write_bytes(data)
    return nib.load(str(path))


@pytest.mark.slow
def test_the_server_infers_the_cli_label_map_and_the_uncertainty(tiny_volume_run, tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    rng = np.random.default_rng(0)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    nib.save(nib.Nifti1Image(rng.random((16, 16, 3)).astype(np.float32), affine), str(studies / "case_0000.nii.gz"))
    assert spadfast_main(["predict", "--checkpoint", str(tiny_volume_run), "--images", str(studies),
                          "--out", str(tmp_path / "cli")]) == 0
    cli = nib.load(str(tmp_path / "cli" / "case.nii.gz"))

    app = tmp_path / "app"  # a copy: the server writes its logs and model folder into the app folder
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    port = _free_port()
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
         "--conf", "model", str(tiny_volume_run), "-i", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                info = _get(f"{base}/info/")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("MONAI Label server did not start:\n" + (tmp_path / "server.log").read_text()[-3000:])
                time.sleep(0.5)
        assert b'"spadfast"' in info and b'"spadfast_uncertainty"' in info
        labels = _nifti(_post(f"{base}/infer/spadfast?image=case_0000&output=image"), tmp_path, "served.nii.gz")
        std = _nifti(_post(f"{base}/infer/spadfast_uncertainty?image=case_0000&output=image"), tmp_path,
                     "std.nii.gz")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()
    assert len(np.unique(np.asarray(cli.dataobj))) > 1  # a map with both classes: equality is not of empty maps
    np.testing.assert_array_equal(np.asarray(labels.dataobj), np.asarray(cli.dataobj))
    np.testing.assert_allclose(labels.affine, cli.affine)
    expected = Segmenter.load(tiny_volume_run).predict(studies / "case_0000.nii.gz")
    np.testing.assert_array_equal(np.asarray(std.dataobj), expected.std.max(axis=-1))
    assert std.shape == (16, 16, 3)


def test_the_app_refuses_a_missing_model(tmp_path, monkeypatch):
    monkeypatch.delenv("SPADFAST_MODEL", raising=False)
    monkeypatch.syspath_prepend(str(APP))
    from main import SpadfastApp

    with pytest.raises(ValueError, match="--conf model PATH"):
        SpadfastApp(str(APP), str(tmp_path), {})
    with pytest.raises(ValueError, match="does not exist"):
        SpadfastApp(str(APP), str(tmp_path), {"model": str(tmp_path / "none")})

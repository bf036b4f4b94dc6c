"""The napari plugin in a real (hidden) viewer: the manifest, the Segment widget, the reader and the samples.

Needs napari and a Qt binding (``pip install -e .[napari]``); where the Qt binding cannot be installed these tests
skip with the import error as their reason (CI's bootstrap installs it).
"""

import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="napari is not installed (pip install -e .[napari])")
pytest.importorskip("qtpy.QtWidgets", reason="no Qt binding (PyQt5) could be imported")
npe2 = pytest.importorskip("npe2")

from spadfast.infer.segmenter import Segmenter  # noqa: E402
from spadfast.models.export import export_model  # noqa: E402
from spadfast.viewers.napari_reader import napari_get_reader, read_prediction_folder  # noqa: E402
from spadfast.viewers.napari_widget import segment_widget  # noqa: E402


def _start_xvfb() -> str | None:
    """A private Xvfb on a display number it picks itself; ``":<n>"``, or None when it did not start. Qt keeps its X
    connection until the interpreter exits (closing it earlier is a fatal XIO error and exit status 1), so a watcher
    stops Xvfb once this test process is gone."""
    read, write = os.pipe()
    watcher = (f"Xvfb -displayfd {write} -screen 0 1024x768x24 -nolisten tcp >/dev/null 2>&1 & x=$!; "
               f"while kill -0 {os.getpid()} 2>/dev/null && kill -0 $x 2>/dev/null; do sleep 1; done; kill $x")
    subprocess.Popen(["sh", "-c", watcher], pass_fds=(write,), start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()  # Xvfb writes the display number once it accepts clients
    return f":{number}" if number else None


@pytest.fixture(scope="session", autouse=True)
def x_display():
    """napari's OpenGL canvas needs an X display: the one set, else Xvfb (scripts/bootstrap.sh installs it).

    Qt runs its X11 platform (``xcb``) on it where that plugin loads, else ``offscreen``; an explicit
    ``QT_QPA_PLATFORM`` is kept. ``offscreen`` decided, in about one process in five on a loaded CPU, that it had no
    OpenGL (libGL never loaded its driver), and napari's first image layer then failed reading the GL extensions
    (AttributeError inside vispy); ``xcb`` on the same Xvfb did not fail in 22 loaded trials. Set before the first
    test creates the QApplication."""
    display = os.environ.get("DISPLAY")
    if not display:
        if shutil.which("Xvfb") is None:
            pytest.skip("no X display and no Xvfb for napari's OpenGL canvas (apt-get install xvfb)")
        display = _start_xvfb()
        if display is None:
            pytest.skip("Xvfb did not start")
        os.environ["DISPLAY"] = display
    if "QT_QPA_PLATFORM" not in os.environ:
        probe = subprocess.run([sys.executable, "-c", "from qtpy.QtWidgets import QApplication; QApplication([])"],
                               env={**os.environ, "QT_QPA_PLATFORM": "xcb"}, capture_output=True, timeout=120)
        os.environ["QT_QPA_PLATFORM"] = "xcb" if probe.returncode == 0 else "offscreen"
    yield display


def test_the_manifest_validates_and_napari_lists_the_plugin():
    manifest = npe2.PluginManifest._from_package_or_name("spadfast")  # what `npe2 validate spadfast` checks
    manifest.validate_imports()
    assert {w.display_name for w in manifest.contributions.widgets} == {"Segment"}
    pm = npe2.PluginManager.instance()
    pm.discover()  # the napari.manifest entry point: what napari's Plugins menu lists
    assert ("spadfast", "Segment") in {(w.plugin_name, w.display_name) for w in pm.iter_widgets()}


def test_napari_docks_the_widget_from_its_plugin_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("spadfast", "Segment")
    assert "model" in widget.controls and dock is not None


def _wait(qtbot, widget, timeout=30_000):
    qtbot.waitUntil(lambda: widget.controls["status"].value in ("done", "failed", "cancelled"), timeout=timeout)


def test_the_widget_adds_labels_and_uncertainty_equal_to_predict(make_napari_viewer, qtbot, tiny_run, tmp_path):
    export = export_model(tiny_run, tmp_path / "nuclei.safetensors", class_names=["background", "nucleus"])
    viewer = make_napari_viewer()
    image = np.random.default_rng(0).integers(0, 256, size=(24, 20), dtype=np.uint8)
    viewer.add_image(image, name="cells", scale=(0.5, 0.25))
    widget = segment_widget(viewer)
    widget.controls["model"].value = export
    widget.controls["layer"].value = viewer.layers["cells"]
    widget.segment()
    _wait(qtbot, widget)
    assert widget.controls["status"].value == "done"
    expected = Segmenter.load(export).predict(image)
    labels, uncertainty = viewer.layers["cells labels"], viewer.layers["cells uncertainty"]
    np.testing.assert_array_equal(labels.data, expected.labels)
    np.testing.assert_array_equal(uncertainty.data, expected.std)
    assert tuple(labels.scale) == (0.5, 0.25) and tuple(uncertainty.scale) == (0.5, 0.25)
    assert list(labels.features["class"]) == ["background", "nucleus"]
    assert uncertainty.colormap.name == "magma"


def test_a_stack_slice_by_slice_in_the_viewer(make_napari_viewer, qtbot, tiny_run):
    viewer = make_napari_viewer()
    stack = np.random.default_rng(1).integers(0, 256, size=(2, 16, 16), dtype=np.uint8)
    viewer.add_image(stack, name="stack")
    widget = segment_widget(viewer)
    widget.controls["model"].value = tiny_run
    segmenter = Segmenter.load(tiny_run)  # the widget shows the model's own steps and members once it is chosen
    assert widget.controls["steps"].value == segmenter.config.sample_steps
    assert widget.controls["members"].value == segmenter.config.ensemble
    widget.controls["layer"].value = viewer.layers["stack"]
    widget.controls["mode"].value = "stack"
    widget.segment()
    _wait(qtbot, widget)
    for z in range(2):
        np.testing.assert_array_equal(viewer.layers["stack labels"].data[z], segmenter.predict(stack[z]).labels)
    assert widget.controls["progress"].value == 2


@pytest.mark.parametrize("case", ["no model", "rgb", "4-D"])
def test_bad_input_is_a_notification_not_a_traceback(make_napari_viewer, tiny_run, monkeypatch, case):
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = make_napari_viewer()
    data = {"no model": np.zeros((16, 16), np.uint8), "rgb": np.zeros((16, 16, 3), np.uint8),
            "4-D": np.zeros((2, 2, 16, 16), np.uint8)}[case]
    viewer.add_image(data, name="x", rgb=case == "rgb")
    widget = segment_widget(viewer)
    if case != "no model":  # else the model box stays as a new widget shows it: empty
        widget.controls["model"].value = tiny_run
    widget.controls["layer"].value = viewer.layers["x"]
    if case == "4-D":
        widget.controls["mode"].value = "stack"
    widget.segment()
    expected = {"no model": "choose a model", "rgb": "RGB but the model reads 1 channel",
                "4-D": "4 spatial dimensions"}[case]
    assert len(shown) == 1 and expected in shown[0], shown
    assert [layer.name for layer in viewer.layers] == ["x"] and widget.worker is None


def test_cancel_leaves_the_viewer_as_it_was(make_napari_viewer, qtbot, tiny_run, monkeypatch):
    viewer = make_napari_viewer()
    stack = np.zeros((40, 16, 16), np.uint8)
    viewer.add_image(stack, name="stack")
    widget = segment_widget(viewer)
    widget.controls["model"].value = tiny_run
    widget.controls["layer"].value = viewer.layers["stack"]
    widget.controls["mode"].value = "stack"
    widget.segment()
    qtbot.waitUntil(lambda: widget.controls["progress"].value >= 1, timeout=30_000)
    widget.cancel()
    _wait(qtbot, widget)
    assert widget.controls["status"].value == "cancelled"
    assert widget.controls["progress"].value == 0
    assert [layer.name for layer in viewer.layers] == ["stack"]


def test_the_reader_opens_a_prediction_folder(make_napari_viewer, tmp_path):
    pred = tmp_path / "pred"
    (pred / "uncertainty").mkdir(parents=True)
    (tmp_path / "images").mkdir()
    image = np.full((12, 10), 90, np.uint8)
    cv2.imwrite(str(tmp_path / "images" / "a.png"), image)
    mask = np.zeros((12, 10), np.uint8)
    mask[3:6, 2:5] = 255
    cv2.imwrite(str(pred / "a.png"), mask)
    cv2.imwrite(str(pred / "uncertainty" / "a.png"), np.full((12, 10), 51, np.uint8))
    assert napari_get_reader(str(tmp_path / "images" / "a.png")) is None
    assert napari_get_reader(str(pred)) is read_prediction_folder
    viewer = make_napari_viewer()
    viewer.open(str(pred), plugin="spadfast")
    assert [layer.name for layer in viewer.layers] == ["a", "a labels", "a uncertainty"]
    np.testing.assert_array_equal(viewer.layers["a"].data, image)
    np.testing.assert_array_equal(viewer.layers["a labels"].data, mask > 0)
    np.testing.assert_allclose(viewer.layers["a uncertainty"].data, 51 / 510)


def test_the_reader_refuses_a_folder_without_label_maps(tmp_path):
    assert napari_get_reader(str(tmp_path)) is None
    with pytest.raises(ValueError, match="holds no label maps"):
        read_prediction_folder(tmp_path)


def test_the_sample_data_and_the_demo_model_made_on_first_use(make_napari_viewer, tmp_path, monkeypatch, tiny_run):
    import spadfast.viewers.napari_sample as sample

    from ..helpers import tiny_config

    monkeypatch.setenv("SPADFAST_CACHE", str(tmp_path / "cache"))
    trained = []
    real = sample.demo_model
    monkeypatch.setattr(sample, "demo_model", lambda: trained.append(1) or real(config=tiny_config(train_steps=1)))
    viewer = make_napari_viewer()
    viewer.open_sample("spadfast", "lesions")
    assert viewer.layers["spadfast lesions"].data.shape == (8, 64, 64)
    assert set(np.unique(viewer.layers["spadfast lesions ground truth"].data)) == {0, 1}
    viewer.open_sample("spadfast", "lesions_model")
    folder = tmp_path / "cache" / "demo-model"
    assert (folder / "checkpoint.safetensors").is_file() and not (tmp_path / "cache" / "demo-model.partial").exists()
    stamp = (folder / "checkpoint.safetensors").stat().st_mtime_ns
    assert real(config=tiny_config(train_steps=1)) == folder  # made once: the second use loads it
    assert (folder / "checkpoint.safetensors").stat().st_mtime_ns == stamp
    widget = segment_widget(viewer)
    widget.controls["layer"].value = viewer.layers[-1]
    assert str(widget.controls["model"].value) == str(folder)
    assert widget.controls["mode"].value == "slice"

"""The README's napari screenshot: the Segment widget on a DSB2018 nuclei image, with labels and uncertainty.

    python scripts/napari_screenshot.py --model RUN --image IMG [--out docs/images/napari_widget.png]

``IMG``: an 8-bit nuclei image, e.g. the DSB2018 image of the stardist 0.9.2 wheel as the diffusion study prepares it
(``STUDY/data/nuclei-noisy/fold0/test/images/strip0.png``: the wheel's ``img2d.tif`` is 16-bit with values up to 235,
which dtype normalisation reads as nearly black). The model is any run folder or export trained on nuclei; the
README's picture used the diffusion study's pilot run nuclei-noisy / fold 0 / baseline / seed 0 (3000 steps, commit
a4dd245) on its held-out strip 0. Needs napari with a Qt binding and an X display (``xvfb-run`` works) with ``QT_QPA_PLATFORM=xcb``:
napari's offscreen platform renders no canvas for screenshots.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--crop", type=int, nargs=4, default=(0, 128, 0, 256), metavar=("Y0", "Y1", "X0", "X1"))
    p.add_argument("--out", type=Path, default=Path("docs/images/napari_widget.png"))
    args = p.parse_args(argv)

    import warnings

    warnings.filterwarnings("ignore", message="napari support for the PyQt5")  # a toast over the canvas otherwise
    import napari
    from qtpy.QtWidgets import QApplication

    from spadfast.viewers.napari_widget import segment_widget

    image = cv2.imread(str(args.image), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SystemExit(f"{args.image}: not an image")
    y0, y1, x0, x1 = args.crop
    viewer = napari.Viewer(show=True)
    viewer.add_image(image[y0:y1, x0:x1], name="nuclei")
    widget = segment_widget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment (spadfast)", area="right")
    widget.controls["model"].value = args.model
    widget.controls["layer"].value = viewer.layers["nuclei"]
    widget.segment()
    app = QApplication.instance()
    while widget.worker is not None:  # the worker thread posts its layers back through the event loop
        app.processEvents()
    labels = viewer.layers["nuclei labels"]
    labels.contour = 1
    print(f"foreground pixels: {int((labels.data > 0).sum())} of {labels.data.size}")
    viewer.layers.selection.active = viewer.layers["nuclei uncertainty"]
    viewer.window._qt_window.resize(1400, 800)
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):  # e.g. the PyQt5 deprecation notice
        toast.close()
    for _ in range(20):
        app.processEvents()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.out), canvas_only=False, flash=False)
    viewer.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

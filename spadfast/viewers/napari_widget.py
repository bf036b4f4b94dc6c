"""The napari dock widget "Segment": a spadfast model, an Image layer, steps / members / TTA, and a Segment button.

Segmenting adds a Labels layer (class names from the model, as the layer's ``features``) and an Image layer of the
ensemble's uncertainty (``magma``), both at the input layer's scale and translation. The work
(:func:`spadfast.viewers.layers.iter_segment_layer`) runs in a worker thread that reports each slice to a progress bar;
Cancel stops it between slices and adds nothing. Bad input (no model, an RGB layer for a gray model, a 4-D layer)
is a napari notification, not a traceback.

napari, magicgui and Qt are imported when the widget is built (``pip install spadfast[napari]``), never by
``import spadfast``.
"""

from pathlib import Path

from .layers import MODES, iter_segment_layer, load_segmenter, model_class_names

__all__ = ["SegmentWidget", "segment_widget", "MODE_LABELS", "add_result_layers"]

MODE_LABELS = {
    "image": "2-D image",
    "slice": "current slice of a stack",
    "stack": "whole stack, slice by slice",
    "volume": "whole stack, the model's volume path",
}


def add_result_layers(viewer, source, result) -> tuple:
    """Add ``result`` (a :class:`spadfast.viewers.layers.LayerSegmentation` of layer ``source``) to ``viewer`` as
    ``"<source> labels"`` (Labels, int32, ``features["class"]`` the class names) and ``"<source> uncertainty"``
    (Image, float32, ``magma``), at ``source``'s scale and translation. Returns the two layers."""
    spatial = result.labels.ndim
    scale, translate = tuple(source.scale)[-spatial:], tuple(source.translate)[-spatial:]
    labels = viewer.add_labels(result.labels, name=f"{source.name} labels", scale=scale, translate=translate,
                               features={"class": list(result.class_names)},
                               metadata={"class_names": list(result.class_names)})
    high = float(result.uncertainty.max()) if result.uncertainty.size else 0.0
    uncertainty = viewer.add_image(result.uncertainty, name=f"{source.name} uncertainty", colormap="magma",
                                   scale=scale, translate=translate, blending="additive", opacity=0.7,
                                   contrast_limits=(0.0, high if high > 0 else 1.0))
    return labels, uncertainty


class SegmentWidget:
    """What the manifest names: napari instantiates a widget class with ``napari_viewer`` (found by that parameter
    name on ``__init__``), and this one returns :func:`segment_widget`'s container, so that magicgui and napari
    load only when the widget is built."""

    def __new__(cls, napari_viewer):
        return segment_widget(napari_viewer)

    def __init__(self, napari_viewer) -> None:  # the signature napari reads; never runs (__new__ returns a Container)
        raise AssertionError("unreachable")


def segment_widget(napari_viewer):
    """The dock widget (a magicgui ``Container``) for ``napari_viewer``."""
    import napari
    from magicgui.widgets import (
        CheckBox,
        ComboBox,
        Container,
        FileEdit,
        Label,
        ProgressBar,
        PushButton,
        SpinBox,
        create_widget,
    )
    from napari.qt.threading import thread_worker
    from napari.utils.notifications import show_error, show_info

    viewer = napari_viewer
    model = FileEdit(label="model", mode="d", tooltip="run folder, .safetensors export or ONNX export folder "
                     "(type a .safetensors path; the button picks folders)")
    layer = create_widget(label="image", annotation=napari.layers.Image)
    mode = ComboBox(label="segment", choices=[(MODE_LABELS[m], m) for m in MODES], value="image")
    steps = SpinBox(label="steps", value=0, min=0, max=1000,
                    tooltip="DDIM steps (set to the model's own when a model is chosen; 0: the model's own)")
    members = SpinBox(label="members", value=0, min=0, max=256,
                      tooltip="ensemble members (set to the model's own when a model is chosen; 0: the model's own)")
    tta = CheckBox(label="TTA", value=False, tooltip="flips (and transposes) spread over the members")
    run = PushButton(text="Segment")
    cancel = PushButton(text="Cancel", enabled=False)
    progress = ProgressBar(label="progress", value=0, min=0, max=1)
    status = Label(value="")
    container = Container(widgets=[model, layer, mode, steps, members, tta, run, cancel, progress, status])
    container.worker = None

    def on_layer(value) -> None:
        if value is None:
            return
        if value.metadata.get("spadfast_model"):  # the sample data's demo image names its model
            model.value = value.metadata["spadfast_model"]
        spatial = value.data.ndim - (1 if value.rgb else 0)
        mode.value = "image" if spatial == 2 else ("slice" if mode.value == "image" else mode.value)

    layer.changed.connect(on_layer)

    def on_model(value) -> None:
        """Show the chosen model's own steps and members (0 stays "the model's own" when it cannot be read)."""
        chosen = model.line_edit.value.strip()
        if not chosen or not Path(chosen).exists():
            return
        try:
            config = load_segmenter(chosen).config
        except (ValueError, TypeError, OSError):
            return  # reported when Segment is pressed
        steps.value, members.value = int(config.sample_steps), int(config.ensemble)

    model.changed.connect(on_model)

    def finish(text: str) -> None:
        run.enabled, cancel.enabled = True, False
        status.value = text
        container.worker = None

    def start() -> None:
        source = layer.value
        if source is None:
            show_error("spadfast: choose an Image layer to segment")
            return
        data = source.data
        if isinstance(data, (list, tuple)) or getattr(source, "multiscale", False):
            data = source.data[0]  # a multiscale layer: its full-resolution level
        current = int(viewer.dims.current_step[0]) if data.ndim - (1 if source.rgb else 0) == 3 else 0
        chosen = model.line_edit.value.strip()  # the typed text: FileEdit.value turns "" into the working folder
        try:
            segmenter = load_segmenter(chosen or None)
            names = model_class_names(Path(chosen), int(segmenter.config.num_classes))
            work = iter_segment_layer(segmenter, data, rgb=bool(source.rgb), mode=mode.value, current=current,
                                      scale=tuple(source.scale), steps=steps.value or None,
                                      ensemble=members.value or None, tta=tta.value, class_names=names)
            next(work)  # the checks run before the worker starts: bad input is a notification
        except (ValueError, TypeError, OSError) as e:
            show_error(f"spadfast: {e}")
            return

        @thread_worker
        def job():
            done = yield from work
            return done

        worker = job()
        container.worker = worker
        run.enabled, cancel.enabled = False, True
        progress.value, status.value = 0, "segmenting..."

        def on_yield(step) -> None:
            progress.max = max(int(step[1]), 1)
            progress.value = int(step[0])

        def on_return(result) -> None:
            if result is not None:
                add_result_layers(viewer, source, result)
            finish("done")

        def on_error(e) -> None:
            show_error(f"spadfast: {e}")
            finish("failed")

        def on_abort(*_) -> None:
            show_info("spadfast: segmentation cancelled; no layer was added")
            progress.value = 0
            finish("cancelled")

        worker.yielded.connect(on_yield)
        worker.returned.connect(on_return)
        worker.errored.connect(on_error)
        worker.aborted.connect(on_abort)
        worker.start()

    def stop() -> None:
        if container.worker is not None:
            container.worker.quit()

    run.changed.connect(start)
    cancel.changed.connect(stop)
    container.segment, container.cancel = start, stop  # for scripts and tests: the buttons' actions
    container.controls = dict(model=model, layer=layer, mode=mode, steps=steps, members=members, tta=tta,
                              progress=progress, status=status)
    on_layer(layer.value)
    return container

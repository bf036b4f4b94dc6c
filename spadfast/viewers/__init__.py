"""Viewers: spadfast inside image viewers (the napari plugin: widget, reader, sample data). The top stage: it may
import every other stage and nothing imports it; napari and Qt are imported lazily, so ``import spadfast`` never
needs them (install them with the ``[napari]`` extra)."""

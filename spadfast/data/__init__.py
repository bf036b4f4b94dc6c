"""Training and validation data: image folders, dict datasets, volume slices, patches, batch streams,
augmentation, synthetic sets."""

"""Prediction: ``Segmenter``, sliding windows, test-time augmentation, model ensembles, volumes, ONNX."""

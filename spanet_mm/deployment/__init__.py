"""Deployment: ONNX export with dynamic sizes, checked with onnxruntime (``onnx``)."""

"""Deployment: ONNX export with dynamic sizes, checked with onnxruntime (``onnx``), and
fixed-size GPU inference replayed from a CUDA graph (``cuda_graph``)."""

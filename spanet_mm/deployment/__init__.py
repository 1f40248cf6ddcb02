"""Deployment: ONNX export with dynamic sizes, checked with onnxruntime (``onnx``),
fixed-size GPU inference replayed from a CUDA graph (``cuda_graph``), and inference compiled
by torch.compile with the weights frozen in (``compiled``); the autocast setting the last two
share (``amp``)."""

"""Sovereign inference backend: code that runs on (or drives) Triton hosts.

This package ships to Triton hosts together with the python-backend model
(:mod:`inference_backend.triton_model`), so it must never import Django or the
portal's ``apps`` package. Only the standard library, numpy, onnx, onnxruntime,
cryptography and urllib3 are allowed here.
"""

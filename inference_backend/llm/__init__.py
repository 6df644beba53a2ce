"""Language models: GGUF import to an ONNX decoder, its tokenizer and generation loop.

No Django here: this package ships to Triton hosts (importlinter contract in pyproject.toml).
"""

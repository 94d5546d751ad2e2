"""Compressed-model files and their runtimes: export, packed low-bit file, int8 ONNX, timing."""

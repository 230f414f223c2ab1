"""Export of checkpoints to ONNX graphs of the whole tile computation (``tseg-rt export``)."""

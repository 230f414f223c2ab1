"""TensorRT engines built from the exported ONNX (``tseg-rt build-engine``)."""

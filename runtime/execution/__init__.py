"""Running a model over a slide: the model contract, backends (ONNX Runtime, TensorRT), the CUDA executor, the tile pipeline and the Segmenter that ties reading, method and backend together."""

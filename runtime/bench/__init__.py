"""Throughput benchmarking on the user's own machine (``tseg-rt bench``), installed with the package.

Modules, each one concept:

* :mod:`~tseg.runtime.bench.flops`: FLOP of an ONNX graph at a tile size (1 MAC = 2 FLOP);
* :mod:`~tseg.runtime.bench.machine`: the machine (CPU, memory, GPU, driver, CUDA, versions);
* :mod:`~tseg.runtime.bench.device`: host <-> device copy rates and device memory (CUDA);
* :mod:`~tseg.runtime.bench.engine`: the engine alone, like trtexec;
* :mod:`~tseg.runtime.bench.stages`: per-stage shares, the limiting stage and the advice (pure);
* :mod:`~tseg.runtime.bench.end_to_end`: whole slides through the real pipeline;
* :mod:`~tseg.runtime.bench.result`: the result file (schema ``tseg-rt-bench/1``), written atomically;
* :mod:`~tseg.runtime.bench.run`: the engine alone then whole slides, as one result;
* :mod:`~tseg.runtime.bench.check`: ``--check``, the GPU check (executor, PyTorch rows, engine
  rows), with :mod:`~tseg.runtime.bench.executor_check`, :mod:`~tseg.runtime.bench.torch_network`,
  :mod:`~tseg.runtime.bench.gpu_engines` and :mod:`~tseg.runtime.bench.child` (one step a process);
* :mod:`~tseg.runtime.bench.compare`: ``--compare``, two results side by side;
* :mod:`~tseg.runtime.bench.report`: the results as terminal text.

PyTorch, CuPy and TensorRT are imported only inside the steps that use them.
"""

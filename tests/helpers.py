"""Helpers shared by the tests (importable as ``helpers``: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from requirements import require

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``$TSEG_SHARED_DATA`` or ``../shared/data`` beside the repository, if it exists."""
    env = os.environ.get("TSEG_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if (c / "slides").is_dir():
            return c
    return None


def real_slide(shared: Path, name: str) -> Path:
    p = shared / "slides" / name
    if not p.exists():
        pytest.skip(f"{p} is absent from the shared data")
    return p


def textured_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Random but spatially smooth-ish RGB texture (not uniform noise)."""
    rng = np.random.default_rng(seed)
    import cv2

    base = rng.random((height // 4 + 1, width // 4 + 1, 3)).astype(np.float32)
    img = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 0.08, img.shape).astype(np.float32)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


# --- tiny models and slides with a known answer -----------------------------------------------

#: Pixels whose red channel is below this are "tumour" for :func:`make_colour_model`.
DARK_RED_LIMIT = 128


def make_colour_model(path: Path, tile: int = 256, overlap: int = 32, divisor: int = 16,
                      contract: bool = True, input_dtype: int | None = None, graded: bool = False,
                      **contract_fields) -> Path:
    """An ONNX graph (built with onnx.helper, no PyTorch) whose tumour probability is 255 where
    the pixel's red channel is below 128 and 0 elsewhere (``graded``: 255 - red), uint8 NHWC in,
    uint8 N1HW out."""
    import onnx
    from onnx import TensorProto, helper

    from tseg.runtime.execution.contract import METADATA_KEY, ModelContract

    in_type = TensorProto.UINT8 if input_dtype is None else input_dtype
    x = helper.make_tensor_value_info("image", in_type, ["N", "H", "W", 3])
    y = helper.make_tensor_value_info("tumour_probability", TensorProto.UINT8, ["N", 1, "H", "W"])
    init = [
        helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
        helper.make_tensor("ends", TensorProto.INT64, [1], [1]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [3]),
        helper.make_tensor("limit", TensorProto.FLOAT, [], [float(DARK_RED_LIMIT)]),
        helper.make_tensor("full", TensorProto.FLOAT, [], [255.0]),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Slice", ["xf", "starts", "ends", "axes"], ["red"]),
    ]
    if graded:
        nodes.append(helper.make_node("Sub", ["full", "red"], ["prob"]))
    else:
        nodes += [helper.make_node("Less", ["red", "limit"], ["dark"]),
                  helper.make_node("Cast", ["dark"], ["darkf"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["darkf", "full"], ["prob"])]
    # As TensorRT's parser requires: the uint8 input feeds only a Cast, and the uint8 output comes
    # straight from a Cast (no uint8 intermediate tensor).
    nodes += [
        helper.make_node("Transpose", ["prob"], ["prob_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Cast", ["prob_nchw"], ["tumour_probability"], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(nodes, "colour", [x], [y], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if contract:
        c = ModelContract(name="test colour model", tile_size=tile, min_overlap=overlap, divisor=divisor,
                          **contract_fields)
        helper.set_model_props(model, {METADATA_KEY: c.to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def add_to_probability(model, nodes, term: str) -> None:  # noqa: ANN001 - an onnx.ModelProto, NodeProtos
    """Insert ``nodes`` into a colour model's graph (from :func:`make_colour_model`) right after
    the node making its probability ("prob"), and add their output ``term`` to the probability
    (a zero term leaves the outputs identical)."""
    from onnx import helper

    g = model.graph
    producer = next(n for n in g.node if "prob" in n.output)
    producer.output[0] = "prob_before"
    index = list(g.node).index(producer) + 1
    for k, node in enumerate([*nodes, helper.make_node("Add", ["prob_before", term], ["prob"])]):
        g.node.insert(index + k, node)


def make_slow_model(path: Path, products: int = 12) -> Path:
    """The colour model plus work that changes nothing: ``products`` 256 x 768 by 768 x 768 matrix
    products on each 256 px tile (0.3 GFLOP each), whose result enters the output as
    Relu(-|x|) = 0 (outputs identical to the colour model's). A large slide then takes long
    enough on any machine that a signal sent once it has started cannot arrive after it finished."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(make_colour_model(path)))
    g = model.graph
    weight = numpy_helper.from_array(np.full((768, 768), 1.0 / 768, np.float32), "slow_w")
    g.initializer.extend([weight, helper.make_tensor("slow_shape", TensorProto.INT64, [2], [-1, 768])])
    nodes = [helper.make_node("Reshape", ["xf", "slow_shape"], ["slow0"])]
    for i in range(products):
        nodes.append(helper.make_node("MatMul", [f"slow{i}", "slow_w"], [f"slow{i + 1}"]))
    nodes += [helper.make_node("ReduceMax", [f"slow{products}"], ["slow_max"], keepdims=0),
              helper.make_node("Abs", ["slow_max"], ["slow_abs"]),
              helper.make_node("Neg", ["slow_abs"], ["slow_neg"]),
              helper.make_node("Relu", ["slow_neg"], ["slow_zero"])]
    add_to_probability(model, nodes, "slow_zero")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_square_slide(path: Path, width_um: int = 1600, height_um: int = 1200, mpp: float = 0.5,
                      square_um: tuple[int, int, int, int] = (600, 400, 500, 400),
                      tissue_um: tuple[int, int, int, int] | None = (150, 100, 1300, 1000),
                      seed: int = 0) -> dict:
    """A slide: white glass, a pink textured tissue rectangle, a dark textured square inside it.

    Returns the geometry in level-0 pixels and µm. The colour model sees only the square.
    """
    import cv2

    from tseg.runtime.outputs.pyramid_tiff import pyramid_from_array, write_pyramid

    w, h = int(width_um / mpp), int(height_um / mpp)
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 244, np.uint8)
    # Texture on a 10 µm grid, so the 5 µm/px overview shows structure at any level-0 MPP.
    texture = rng.normal(0, 14, (int(height_um // 10) + 1, int(width_um // 10) + 1, 1)).astype(np.float32)
    texture = cv2.resize(texture, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    if tissue_um is not None:
        tx, ty, tw, tht = (int(v / mpp) for v in tissue_um)
        pink = np.array([228, 150, 196], np.float32) + texture[ty : ty + tht, tx : tx + tw]
        img[ty : ty + tht, tx : tx + tw] = np.clip(pink, 150, 255).astype(np.uint8)
    sx, sy, sw, sh = (int(v / mpp) for v in square_um)
    dark = np.array([80, 40, 120], np.float32) + texture[sy : sy + sh, sx : sx + sw]
    img[sy : sy + sh, sx : sx + sw] = np.clip(dark, 0, 120).astype(np.uint8)
    write_pyramid(path, pyramid_from_array(img, min_size=256, factor=4), mpp)
    return {"path": path, "mpp": mpp, "square_level0": (sx, sy, sw, sh), "square_um": square_um,
            "size_level0": (w, h)}


# --- a simulated CUDA device for the executor and the TensorRT backend -------------------------

H2D, COMPUTE, D2H, STAGE = 1.0, 4.0, 1.0, 0.2


class SimStream:
    def __init__(self, name):
        self.name, self.ready = name, 0.0

    def __int__(self):  # streams reach TensorRT as integer handles
        return id(self)


class SimEvent:
    def __init__(self):
        self.time = 0.0


class SimDevice:
    """A simulated CUDA device with a virtual clock (see tests/runtime/execution/test_executor.py).

    It also checks what a real device would punish: ``strict_threads`` makes an enqueue from a
    thread that never made this device current (``activate``) an error, as a launch from such a
    thread goes to another GPU; freeing a buffer that an enqueued operation still uses is recorded
    in ``hazards``; ``idle()`` says whether nothing is in flight at the host's current time."""

    def __init__(self, strict_threads=False):
        self.host = 0.0
        self.ops = []  # (kind, tile, start, end, buffers read, buffers written)
        self.memory = {}
        self.next_id = 0
        self.streams = []
        self.strict_threads = strict_threads
        self.active_threads = set()
        self.synchronized_streams = 0
        self.hazards = []

    def activate(self):
        import threading

        self.active_threads.add(threading.get_ident())

    def synchronize_stream(self, stream):
        self.host = max(self.host, stream.ready)
        self.synchronized_streams += 1

    def idle(self):
        return all(s.ready <= self.host for s in self.streams)

    def create_stream(self):
        s = SimStream(f"s{len(self.streams)}")
        self.streams.append(s)
        return s

    def create_event(self):
        return SimEvent()

    def record(self, event, stream):
        event.time = stream.ready

    def wait(self, stream, event):
        stream.ready = max(stream.ready, event.time)

    def synchronize(self, event):
        self.host = max(self.host, event.time)

    def alloc_device(self, nbytes):
        self.next_id += 1
        self.memory[self.next_id] = np.zeros(nbytes, np.uint8)
        return self.next_id

    def alloc_host(self, nbytes):
        return np.zeros(nbytes, np.uint8)

    def _op(self, kind, stream, duration, reads, writes, tile=None):
        import threading

        if self.strict_threads and threading.get_ident() not in self.active_threads:
            raise RuntimeError(f"{kind} enqueued from a thread whose current CUDA device is not this one")
        start = max(stream.ready, self.host)
        stream.ready = start + duration
        self.ops.append((kind, tile, start, stream.ready, reads, writes))

    def copy_to_device(self, dst, src, nbytes, stream):
        self.memory[dst][:nbytes] = src[:nbytes]
        self._op("h2d", stream, H2D, {id(src)}, {dst})

    def copy_to_host(self, dst, src, nbytes, stream):
        dst[:nbytes] = self.memory[src][:nbytes]
        self._op("d2h", stream, D2H, {src}, {id(dst)})

    def _check_free(self, buffer_id, what):
        busy = [op for op in self.ops if buffer_id in op[4] | op[5] and op[3] > self.host]
        if busy:
            self.hazards.append(f"{what} freed at t={self.host} while {busy[-1][0]} uses it until t={busy[-1][3]}")

    def free_device(self, ptr):
        self._check_free(ptr, f"device buffer {ptr}")
        del self.memory[ptr]

    def free_host(self, buffer):
        self._check_free(id(buffer), "pinned host buffer")

    def destroy_stream(self, stream):
        pass

    def destroy_event(self, event):
        pass


def make_external_data_model(path: Path, location: str, offset: int | None = 0, length: int | None = 4,
                             write_data: bool = True) -> Path:
    """:func:`make_colour_model` whose ``limit`` initializer (one float32, 128.0) is stored as
    ONNX external data at ``location`` (relative to the model's folder, or anything a hostile
    model might name). ``write_data`` writes those 4 bytes to ``path.parent / location`` when that
    is a plain file name inside the folder that does not exist yet."""
    import onnx
    from onnx import TensorProto

    make_colour_model(path)
    model = onnx.load(path)
    tensor = next(t for t in model.graph.initializer if t.name == "limit")
    tensor.ClearField("float_data")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
    target = path.parent / location
    if write_data and "/" not in location and not os.path.lexists(target):
        np.array([float(DARK_RED_LIMIT)], np.float32).tofile(target)
    onnx.save(model, path)
    return path


def make_claimed_tiff(path: Path, width: int, height: int, mpp: float, tile: int = 256, value: int = 240) -> Path:
    """A tiled RGB TIFF whose tags claim ``width`` x ``height`` px at ``mpp`` µm/px while every tile
    entry points at the same one deflate-compressed tile: a few MB on disk for any size claimed,
    as a hostile or broken file can be. OpenSlide reads it as generic-tiff."""
    import struct
    import zlib

    across, down = -(-width // tile), -(-height // tile)
    count = across * down
    data = zlib.compress(bytes([value]) * (tile * tile * 3), 9)
    entries = 14
    ifd = 8
    extra = ifd + 2 + entries * 12 + 4  # values that do not fit in an entry follow the IFD
    bits_at, xres_at, yres_at = extra, extra + 6, extra + 14
    offsets_at = extra + 22
    counts_at = offsets_at + 4 * count
    tile_at = counts_at + 4 * count
    res = (round(1e4 / mpp * 1000), 1000)  # pixels per cm as a rational

    def entry(tag: int, kind: int, n: int, value: int) -> bytes:
        if kind == 3 and n == 1:
            return struct.pack("<HHIHH", tag, kind, n, value, 0)
        return struct.pack("<HHII", tag, kind, n, value)

    table = [entry(256, 4, 1, width), entry(257, 4, 1, height), entry(258, 3, 3, bits_at), entry(259, 3, 1, 8),
             entry(262, 3, 1, 2), entry(277, 3, 1, 3), entry(282, 5, 1, xres_at), entry(283, 5, 1, yres_at),
             entry(284, 3, 1, 1), entry(296, 3, 1, 3), entry(322, 4, 1, tile), entry(323, 4, 1, tile),
             entry(324, 4, count, offsets_at), entry(325, 4, count, counts_at)]
    assert len(table) == entries
    with open(path, "wb") as fh:
        fh.write(b"II*\x00" + struct.pack("<I", ifd) + struct.pack("<H", entries) + b"".join(table)
                 + struct.pack("<I", 0))
        fh.write(struct.pack("<HHH", 8, 8, 8) + struct.pack("<II", *res) + struct.pack("<II", *res))
        fh.write(np.full(count, tile_at, "<u4").tobytes())
        fh.write(np.full(count, len(data), "<u4").tobytes())
        fh.write(data)
    return path


def shared_corpus_dir() -> Path:
    """The corpus of real scanner files (``../shared/slides``, ``$TSEG_SHARED_SLIDES``, or
    ``slides/`` beside ``$TSEG_SHARED_DATA``; MANIFEST.md lists them). Skips when absent, but fails
    where it is required (:mod:`requirements`: on CI, where ``../shared`` is always present)."""
    candidates = [Path(os.environ["TSEG_SHARED_SLIDES"])] if os.environ.get("TSEG_SHARED_SLIDES") else []
    if os.environ.get("TSEG_SHARED_DATA"):
        candidates.append(Path(os.environ["TSEG_SHARED_DATA"]).parent / "slides")
    candidates.append(REPO.parent / "shared" / "slides")
    for c in candidates:
        if (c / "MANIFEST.md").is_file():
            return c
    require("shared", "the corpus of real scanner files is absent: ../shared/slides (or $TSEG_SHARED_SLIDES) with its "
                      "MANIFEST.md; it is not distributed with the repository")
    raise AssertionError("unreachable")  # require() skipped or failed

"""Real training steps on CPU: the loss falls, resuming is exact, checkpoints, the importer."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import make_square_slide  # noqa: E402
from tseg.runtime.errors import ModelError  # noqa: E402
from tseg.training.checkpoint import load_checkpoint, read_checkpoint  # noqa: E402
from tseg.training.config import load_config  # noqa: E402
from tseg.training.importer import import_published  # noqa: E402
from tseg.training.model import build_model  # noqa: E402
from tseg.training.prepare import prepare_dataset  # noqa: E402
from tseg.training.train import fit  # noqa: E402


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    rows = ["path,annotation,cancer_type,cohort"]
    for i, kind in enumerate(["colon", "lung", "lung"]):
        info = make_square_slide(d / f"s{i}.tiff", width_um=700, height_um=600, tissue_um=(20, 20, 660, 560),
                                 square_um=(100 + 50 * i, 150, 300, 250), seed=i)
        sx, sy, sw, sh = info["square_level0"]
        (d / f"s{i}.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [
            [[sx, sy], [sx + sw, sy], [sx + sw, sy + sh], [sx, sy + sh], [sx, sy]]]}))
        rows.append(f"s{i}.tiff,s{i}.geojson,{kind},C{i}")
    (d / "slides.csv").write_text("\n".join(rows) + "\n")
    return prepare_dataset(d / "slides.csv", d / "ds", tile_size=128).index


def torchrun(nproc: int, *args: str, tries: int = 5):
    """``torch.distributed.run`` with ``nproc`` processes on a free port: found by binding port 0
    and closing it, so another process may take it before torchrun's store binds it; then the
    run fails at once with EADDRINUSE and is started again on a new port (``tries`` in all)."""
    import socket
    import subprocess
    import sys

    for _ in range(tries):
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                            "--master-port", str(port), *args], capture_output=True, text=True, timeout=600)
        if r.returncode == 0 or "EADDRINUSE" not in r.stderr:
            return r
    return r


def tiny(**optim):
    cfg = load_config("tiny")
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, **optim))


@pytest.mark.slow
def test_training_on_a_fixed_batch_lowers_the_loss(tmp_path, index):
    cfg = tiny(steps=25, warmup_steps=4, warmup_every=1, peak_lr=0.02, global_batch=2, micro_batch=2)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, crop_size=128, augment=False, balance=False))
    # A fixed batch: an index of exactly two tiles, full-size crops, no augmentation.
    lines = index.read_text().splitlines()
    fixed = tmp_path / "fixed.csv"
    fixed.write_text("\n".join(lines[:1] + [lines[3], lines[8]]) + "\n")
    result = fit(cfg, fixed, tmp_path / "run", progress=False)
    first, last = np.mean(result.losses[:3]), np.mean(result.losses[-3:])
    assert last < 0.8 * first, result.losses
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,epoch,loss,dice_loss,ce_loss,step_length,images_per_s")
    assert len(log) > 3


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, index):
    cfg = tiny(steps=12, checkpoint_every=100)
    whole = fit(cfg, index, tmp_path / "whole", progress=False)
    part = fit(cfg, index, tmp_path / "parts", progress=False, stop_after=5)
    assert part.steps_done == 5 and read_checkpoint(tmp_path / "parts" / "checkpoint.pt")["step"] == 5
    rest = fit(cfg, index, tmp_path / "parts", progress=False)
    assert rest.steps_done == 12
    assert rest.losses == whole.losses[5:]
    a = read_checkpoint(tmp_path / "whole" / "final.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "parts" / "final.pt")["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_checkpoint_is_self_describing(tmp_path, index):
    cfg = tiny(steps=3)
    fit(cfg, index, tmp_path / "run", progress=False)
    loaded = load_checkpoint(tmp_path / "run" / "final.pt")
    c = loaded.content
    assert c["classes"] == ["background", "tissue", "tumour"] and c["class_labels"] == [0, 127, 255]
    assert c["mpp"] == 1.0 and c["tile_size"] == 256 and c["step"] == 3
    assert len(c["provenance"]["index_sha256"]) == 64 and c["provenance"]["versions"]["torch"]
    assert loaded.config == cfg.model and not loaded.model.training
    with torch.no_grad():
        assert loaded.model(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_bad_checkpoints(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not a tseg checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


@pytest.mark.slow
def test_checkpoint_from_another_architecture_is_refused(tmp_path, index):
    cfg = tiny(steps=1)
    fit(cfg, index, tmp_path / "run", progress=False)
    content = read_checkpoint(tmp_path / "run" / "final.pt")
    content["model_config"]["decoder_channels"] = 32  # the weights are for 16
    torch.save(content, tmp_path / "lying.pt")
    with pytest.raises(ModelError, match="do not fit"):
        load_checkpoint(tmp_path / "lying.pt")


def test_importer_maps_prefixed_and_renamed_keys(tmp_path):
    cfg = load_config("tiny").model
    source = build_model(cfg).state_dict()
    published = {}
    for i, (k, v) in enumerate(source.items()):
        name = f"module.{k}"
        if i % 7 == 3:  # as if an older timm/smp had named it differently
            name = name.replace("encoder.model.", "encoder.model.old_")
        published[name] = v.clone()
    torch.save({"network_state": published, "step": 500_000}, tmp_path / "model.tar")
    report = import_published(tmp_path / "model.tar", tmp_path / "imported.pt", config=cfg)
    assert report.complete and report.by_order and report.by_name
    loaded = load_checkpoint(tmp_path / "imported.pt")
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, source[k]), k
    assert loaded.content["step"] == 500_000


def test_importer_refuses_a_mismatched_checkpoint(tmp_path):
    cfg = load_config("tiny").model
    source = build_model(cfg).state_dict()
    bad = {f"module.{k}": v for k, v in source.items()}
    key = next(k for k in bad if k.endswith("weight") and bad[k].ndim == 4)
    bad[key] = torch.zeros(1, 1, 1, 1)
    torch.save({"network_state": bad}, tmp_path / "model.tar")
    with pytest.raises(ModelError) as err:
        import_published(tmp_path / "model.tar", tmp_path / "out.pt", config=cfg)
    assert "got no value" in str(err.value) and key.removeprefix("module.") in str(err.value)
    assert not (tmp_path / "out.pt").exists()
    torch.save({"weights": {}}, tmp_path / "other.tar")
    with pytest.raises(ModelError, match="network_state"):
        import_published(tmp_path / "other.tar", tmp_path / "out.pt", config=cfg)


@pytest.mark.slow
def test_distributed_data_parallel_on_cpu(tmp_path, index):
    """torchrun with 2 processes (gloo on the CPU): each takes its half of the global batch."""
    cfg = tmp_path / "ddp.toml"
    cfg.write_text('name = "ddp"\n[model]\nencoder = "tu-mobilenetv3_small_050"\ndecoder_channels = 16\n'
                   '[data]\ntile_size = 128\ncrop_size = 64\nnum_workers = 0\n'
                   '[optim]\nglobal_batch = 2\nmicro_batch = 1\nsteps = 3\nwarmup_steps = 2\nwarmup_every = 1\namp = false\n')
    r = torchrun(2, "-m", "tseg.training.train", "--config", str(cfg), "--index", str(index), "--out",
                 str(tmp_path / "run"), "--device", "cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    content = read_checkpoint(tmp_path / "run" / "final.pt")
    assert content["step"] == 3 and content["provenance"]["world_size"] == 2
    assert not any(k.startswith("module.") for k in content["state_dict"])


@pytest.mark.slow
def test_one_process_accumulating_8_micro_batches_equals_8_processes(tmp_path, index, caplog):
    """*Network optimisation*: "The batch of 24 is distributed on 8 GPUs with 3 tiles per GPU". The
    config fixes the global batch and the micro-batch; 1 process x 8 accumulation steps must give
    the update of 8 processes x 1 (gloo on the CPU), augmentations and dropout included."""
    toml = ('name = "accumulate"\n[model]\nencoder = "tu-mobilenetv3_small_050"\ndecoder_channels = 16\n'
            '[data]\ntile_size = 128\ncrop_size = 64\nnum_workers = 0\n'
            '[optim]\nglobal_batch = 8\nmicro_batch = 1\nsteps = 2\nwarmup_steps = 1\nwarmup_every = 1\n'
            'peak_lr = 0.05\namp = false\n')
    cfg_path = tmp_path / "accumulate.toml"
    cfg_path.write_text(toml)
    with caplog.at_level("INFO", logger="tseg.training.train"):
        one = fit(load_config(cfg_path), index, tmp_path / "one", progress=False)
    assert "global batch 8 = 1 process(es) x 8 accumulation step(s) x 1 tile(s)" in caplog.text
    assert one.steps_done == 2
    one_ckpt = read_checkpoint(tmp_path / "one" / "final.pt")
    assert one_ckpt["provenance"]["accumulation"] == 8 and one_ckpt["provenance"]["world_size"] == 1
    r = torchrun(8, "-m", "tseg.training.train", "--config", str(cfg_path), "--index", str(index), "--out",
                 str(tmp_path / "eight"), "--device", "cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    eight_ckpt = read_checkpoint(tmp_path / "eight" / "final.pt")
    assert eight_ckpt["provenance"]["accumulation"] == 1 and eight_ckpt["provenance"]["world_size"] == 8
    a, b = one_ckpt["state_dict"], eight_ckpt["state_dict"]
    assert a.keys() == b.keys()
    moved = 0
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)
            moved += 1
    assert moved > 50
    # Momentum buffers too: the same gradients were accumulated.
    for sa, sb in zip(one_ckpt["optimizer"]["state"].values(), eight_ckpt["optimizer"]["state"].values()):
        torch.testing.assert_close(sa["momentum_buffer"], sb["momentum_buffer"], rtol=1e-4, atol=1e-6)
    # The logged loss is the global batch's mean in both layouts.
    log_one = (tmp_path / "one" / "log.csv").read_text().splitlines()[1:]
    log_eight = (tmp_path / "eight" / "log.csv").read_text().splitlines()[1:]
    for x, y in zip(log_one, log_eight):
        assert float(x.split(",")[2]) == pytest.approx(float(y.split(",")[2]), rel=1e-5)

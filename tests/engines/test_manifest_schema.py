"""Engine manifests are validated field by field: a manifest from elsewhere is refused with the
file and the field named, never with a Python error."""

from __future__ import annotations

import json

import pytest

from tseg.runtime.execution.engine_manifest import EngineManifest, read_manifest, schema_problem
from tseg.runtime.errors import ContractError, ModelError


def valid() -> dict:
    return {"format": "tseg-engine-manifest", "format_version": 1, "plan": "m.plan", "plan_sha256": "a" * 64,
            "plan_bytes": 4, "tensorrt_version": "10.9.0.34", "gpu": {"name": "H100", "compute_capability": "9.0"},
            "precision": "fp16", "profile": {"min": [1, 256, 256, 3], "opt": [1, 7680, 7680, 3],
                                             "max": [1, 7680, 7680, 3]},
            "device_memory_bytes": 1024, "onnx": {"sha256": "b" * 64}, "contract": {}}


def test_a_valid_manifest_reads():
    manifest = EngineManifest.from_dict(valid(), "m.plan.json")
    assert manifest.profile["max"][1] == 7680 and manifest.model_contract.tile_size == 7680


@pytest.mark.parametrize("field, value, expected", [
    ("plan_sha256", 5, "field 'plan_sha256' is 5 (number)"), ("plan_sha256", "XYZ", "64 lower-case hex"),
    ("plan_bytes", -1, "field 'plan_bytes'"), ("plan_bytes", True, "field 'plan_bytes'"),
    ("gpu", [], "field 'gpu' is [] (array)"), ("gpu", {"compute_capability": 9.0}, "field 'gpu'"),
    ("profile", {"min": [1, 16, 16, 3]}, "field 'profile'"),
    ("profile", {"min": [1, 512, 512, 3], "opt": [1, 256, 256, 3], "max": [1, 256, 256, 3]}, "min <= opt <= max"),
    ("device_memory_bytes", "1 GB", "field 'device_memory_bytes'"), ("onnx", {"sha256": 1}, "field 'onnx'"),
    ("tensorrt_version", None, "field 'tensorrt_version' is null"), ("contract", "x", "field 'contract'"),
    ("build", 3, "field 'build'"),
])
def test_each_field_is_checked(field, value, expected):
    data = valid()
    data[field] = value
    assert expected in schema_problem(data)
    with pytest.raises(ModelError, match="m.plan.json: invalid engine manifest"):
        EngineManifest.from_dict(data, "m.plan.json")


def test_missing_fields_and_bad_contracts_name_the_file():
    data = valid()
    del data["profile"]
    assert schema_problem(data).startswith("field 'profile' is missing")
    data = valid()
    data["contract"] = {"tile_size": -5}
    with pytest.raises(ContractError, match="m.plan.json"):
        EngineManifest.from_dict(data, "m.plan.json")


@pytest.mark.parametrize("content, expected", [(b"\xff\xfe{}", "not UTF-8"), (b"[1, 2]", "JSON array"),
                                               (b"{", "not valid JSON"), (b"null", "JSON null")])
def test_unreadable_files(tmp_path, content, expected):
    (tmp_path / "m.plan").write_bytes(b"plan")
    (tmp_path / "m.plan.json").write_bytes(content)
    with pytest.raises(ModelError, match=expected) as info:
        read_manifest(tmp_path / "m.plan")
    assert "m.plan.json" in str(info.value)

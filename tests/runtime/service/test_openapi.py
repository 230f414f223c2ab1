"""docs/openapi.json is the service's current OpenAPI document (regenerate it with
``python -m tseg.runtime.service.openapi``)."""

from __future__ import annotations

import json

from helpers import REPO
from tseg.runtime.service.openapi import main, render


def test_docs_openapi_json_is_current():
    path = REPO / "docs" / "openapi.json"
    assert main(["--check", str(path)]) == 0, "docs/openapi.json is not current: run python -m tseg.runtime.service.openapi"
    doc = json.loads(render())
    assert doc["info"]["version"] == "1.0.0" and doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert set(doc["paths"]) == {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/results",
                                 "/v1/jobs/{job_id}/results/{name}", "/v1/jobs/{job_id}/viewer", "/v1/health/live", "/v1/health/ready", "/v1/info",
                                 "/metrics"}
    submit = doc["paths"]["/v1/jobs"]["post"]
    assert set(submit["responses"]) >= {"200", "202", "400", "401", "403", "404", "413", "415", "422"}
    assert "application/problem+json" in submit["responses"]["422"]["content"]
    assert doc["components"]["schemas"]["SubmitRequest"]["additionalProperties"] is False

"""Extract a CRD version's OpenAPI schema as the JSON Schema tests/delivery validates against.

    python deploy/k8s/schemas/extract_crd_schema.py CRD.yaml VERSION OUT.json.gz

The schema in this folder comes from KServe's ``config/crd/full/serving.kserve.io_
inferenceservices.yaml`` (Apache-2.0, commit aaac4e294dae2c7b1aa1886447793f3aa1c30912),
version v1beta1. Descriptions are dropped (size); ``additionalProperties: false`` is added
wherever the CRD lists properties and does not preserve unknown fields, the way the API server
rejects unknown fields under strict field validation (``kubectl apply --validate=strict``).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import yaml


def strict(node: Any) -> Any:
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items() if k != "description"}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def main(crd_path: str, version: str, out: str) -> None:
    crd = yaml.safe_load(Path(crd_path).read_text())
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = strict(served["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # validated by Kubernetes' own schema
    text = json.dumps(schema, separators=(",", ":"), sort_keys=True)
    Path(out).write_bytes(gzip.compress(text.encode(), mtime=0))


if __name__ == "__main__":
    main(*sys.argv[1:4])

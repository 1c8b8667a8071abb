#!/usr/bin/env python3
"""Validates the custom resources in rendered manifests against the schemas in crd-schemas/.

    python3 tests/deploy/validate_crds.py RENDERED.yaml...

kubernetes-validate knows only the Kubernetes API's own kinds and skips the others with a
warning, so the optional components' custom resources (CloudNativePG's `Cluster`) would pass
unchecked. Every object whose apiVersion is not one of Kubernetes' own groups must have a schema
here, named `<group>_<version>_<Kind>.json`, and match it. Prints one line per failure, then
'N passed, N failed'; exits 1 on any failure. Needs PyYAML and jsonschema (both installed with
kubernetes-validate in target/deploy-venv).
"""

import json
import sys
from pathlib import Path

import jsonschema
import yaml

SCHEMAS = Path(__file__).resolve().parent / "crd-schemas"


def is_builtin(api_version: str) -> bool:
    group = api_version.rpartition("/")[0]
    # The core group ("v1"), the unqualified built-in groups (apps, batch, policy, autoscaling)
    # and the *.k8s.io ones.
    return "." not in group or group.endswith(".k8s.io")


def main(paths):
    passed, failures = 0, []
    for path in paths:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if not doc or is_builtin(doc.get("apiVersion", "")):
                continue
            group_version = doc["apiVersion"].replace("/", "_")
            name = f"{Path(path).name}: {doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
            schema_file = SCHEMAS / f"{group_version}_{doc.get('kind')}.json"
            if not schema_file.exists():
                failures.append(f"{name}: no schema {schema_file.name} in {SCHEMAS}")
                continue
            validator = jsonschema.Draft202012Validator(json.loads(schema_file.read_text()))
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
            if errors:
                failures.extend(f"{name}: {'.'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors)
            else:
                passed += 1
    # The checker must reject what it is meant to: a misspelt field and a missing schema.
    bad = {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": {"name": "x"},
           "spec": {"instances": 3, "minSyncReplica": 1}}
    schema = json.loads((SCHEMAS / "postgresql.cnpg.io_v1_Cluster.json").read_text())
    if list(jsonschema.Draft202012Validator(schema).iter_errors(bad)):
        passed += 1
    else:
        failures.append("self-test: a Cluster with a misspelt field passed")
    for line in failures:
        print(line)
    print(f"{passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

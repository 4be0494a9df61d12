#!/usr/bin/env python3
"""Trim upstream CustomResourceDefinitions to the schemas scripts/validate_deploy.py checks against.

    deploy/schemas/vendor.py CRD.yaml VERSION [VERSION...] > deploy/schemas/NAME.json

Keeps, for each named version, the CRD's group, kind, version and openAPIV3Schema; drops every
`description` (the Gateway API's HTTPRoute CRD is 430 KB, mostly prose) and nothing else, so the
validation sees the same types, enums, patterns, bounds and required fields as the API server.
Sources and commits are listed in deploy/schemas/README.md.
"""
import json
import sys

import yaml


def strip_descriptions(node):
    if isinstance(node, dict):
        # Only the annotation (a string) goes: a property named description is a schema (a dict).
        return {
            k: strip_descriptions(v)
            for k, v in node.items()
            if not (k == "description" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def main():
    path, versions = sys.argv[1], sys.argv[2:]
    with open(path) as f:
        crd = yaml.safe_load(f)
    assert crd["kind"] == "CustomResourceDefinition", path
    spec = crd["spec"]
    out = []
    for v in spec["versions"]:
        if v["name"] in versions:
            out.append({
                "group": spec["group"],
                "kind": spec["names"]["kind"],
                "version": v["name"],
                "openAPIV3Schema": strip_descriptions(v["schema"]["openAPIV3Schema"]),
            })
    missing = set(versions) - {o["version"] for o in out}
    if missing:
        sys.exit(f"{path}: no version {sorted(missing)}")
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

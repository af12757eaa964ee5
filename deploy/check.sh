#!/usr/bin/env sh
# Syntax check of deploy/k8s/*.yaml: every document parses as YAML and has apiVersion, kind and
# metadata.name; every ConfigMap's *.toml parses as TOML. Not part of CI, and not a substitute for
# `kubectl apply --dry-run=server` against a real cluster.
# Needs python3 with PyYAML (`pip install pyyaml`); TOML uses tomllib (Python 3.11+) when present.
set -eu
cd "$(dirname "$0")"
python3 - k8s/*.yaml <<'PY'
import sys
import yaml
try:
    import tomllib
except ImportError:
    tomllib = None
failed = 0
for path in sys.argv[1:]:
    with open(path) as f:
        try:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            print(f"{path}: {e}")
            failed += 1
            continue
    for d in docs:
        name = (d.get("metadata") or {}).get("name")
        if not (d.get("apiVersion") and d.get("kind") and name):
            print(f"{path}: a document lacks apiVersion, kind or metadata.name")
            failed += 1
            continue
        if d["kind"] == "ConfigMap" and tomllib:
            for key, text in (d.get("data") or {}).items():
                if key.endswith(".toml"):
                    try:
                        tomllib.loads(text)
                    except tomllib.TOMLDecodeError as e:
                        print(f"{path}: {name}/{key}: {e}")
                        failed += 1
        print(f"ok {path}: {d['kind']}/{name}")
sys.exit(1 if failed else 0)
PY

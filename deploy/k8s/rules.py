"""The rules deploy/README.md states for a rendered kustomization, checked (deploy/check.sh step 2).

    python3 deploy/k8s/rules.py RENDERED.yaml OUT_DIR

Prints one line per broken rule and exits 1 if there is any. Also writes what the next step of
check.sh needs into OUT_DIR: config/<file>.toml (each ConfigMap TOML) and, for each workload,
config/<svc>.env: the environment its container gets (literal values, and the Secret template's
values where it takes a secretKeyRef), one NAME=value a line.

Needs PyYAML (checkov brings it into check.sh's virtualenv).
"""

import os
import sys

import yaml

WORKLOADS = ("Deployment", "StatefulSet")
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
# Which kind of budget each service must have (deploy/README.md, "Disruptions and scaling").
PDB_RULES = {"payment": "minAvailable", "wallet": "minAvailable", "fraud": "maxUnavailable"}
HPA_TARGETS = ("payment", "fraud")


def name_of(doc):
    return (doc.get("metadata") or {}).get("name", "?")


def selects(selector, labels):
    match = (selector or {}).get("matchLabels") or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def check_pod(kind, name, pod, errors, configmaps):
    spec = pod.get("spec") or {}
    where = f"{kind}/{name}"
    psc = spec.get("securityContext") or {}
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        errors.append(f"{where}: pod securityContext.seccompProfile.type must be RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        errors.append(f"{where}: automountServiceAccountToken must be false")
    for c in spec.get("containers") or []:
        cwhere = f"{where} container {c.get('name')}"
        sc = c.get("securityContext") or {}
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")) or sc.get("runAsNonRoot") is False:
            errors.append(f"{cwhere}: runAsNonRoot must be true")
        if sc.get("readOnlyRootFilesystem") is not True:
            errors.append(f"{cwhere}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{cwhere}: allowPrivilegeEscalation must be false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            errors.append(f"{cwhere}: capabilities must drop ALL")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(part) or {}):
                    errors.append(f"{cwhere}: resources.{part}.{r} is missing")
        if kind in WORKLOADS:
            check_probes(cwhere, c, errors)
            check_config_mount(cwhere, c, spec, errors, configmaps)
        # A Job's container runs to completion and serves nothing: no probes to give it.


def check_probes(cwhere, c, errors):
    ports = {p.get("name") for p in c.get("ports") or []}
    numbers = {p.get("containerPort") for p in c.get("ports") or []}
    if not {"http", "admin"} <= ports:
        errors.append(f"{cwhere}: must declare the ports http (service) and admin (admin/metrics)")
    for probe in PROBES:
        p = c.get(probe)
        if not p:
            errors.append(f"{cwhere}: {probe} is missing")
            continue
        port = (p.get("httpGet") or {}).get("port")
        if port not in ports and port not in numbers:
            errors.append(f"{cwhere}: {probe} port {port!r} is not a declared container port")


def check_config_mount(cwhere, c, spec, errors, configmaps):
    args = c.get("args") or []
    if "--config" not in args or args.index("--config") + 1 >= len(args):
        errors.append(f"{cwhere}: args must pass --config")
        return
    path = args[args.index("--config") + 1]
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts") or []}
    for vol in spec.get("volumes") or []:
        cm = (vol.get("configMap") or {}).get("name")
        mount = mounts.get(vol.get("name"))
        if cm and mount and path.startswith(mount.rstrip("/") + "/"):
            key = path[len(mount.rstrip("/")) + 1:]
            if key not in (configmaps.get(cm) or {}):
                errors.append(f"{cwhere}: ConfigMap {cm} has no key {key} for --config {path}")
            return
    errors.append(f"{cwhere}: --config {path} is not in a mounted ConfigMap")


def check(docs):
    errors = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    configmaps = {name_of(d): d.get("data") or {} for d in by_kind.get("ConfigMap", [])}

    pods = [(d["kind"], name_of(d), d["spec"]["template"]) for d in docs
            if d.get("kind") in WORKLOADS + ("Job",)]
    for kind, name, pod in pods:
        check_pod(kind, name, pod, errors, configmaps)

    workloads = {name_of(d): d for d in docs if d.get("kind") in WORKLOADS}
    for svc, field in PDB_RULES.items():
        w = workloads.get(svc)
        if not w:
            errors.append(f"workload {svc} is missing")
            continue
        labels = w["spec"]["template"]["metadata"].get("labels") or {}
        pdbs = [p for p in by_kind.get("PodDisruptionBudget", [])
                if selects(p["spec"].get("selector"), labels)]
        if not any(field in p["spec"] for p in pdbs):
            errors.append(f"{svc}: no PodDisruptionBudget with {field} selects its pods")
    for svc in HPA_TARGETS:
        if not any((h["spec"].get("scaleTargetRef") or {}).get("name") == svc
                   for h in by_kind.get("HorizontalPodAutoscaler", [])):
            errors.append(f"{svc}: no HorizontalPodAutoscaler scales it")
    for name, w in workloads.items():
        tsc = w["spec"]["template"]["spec"].get("topologySpreadConstraints") or []
        keys = {t.get("topologyKey") for t in tsc}
        if not {"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= keys:
            errors.append(f"{name}: topologySpreadConstraints must spread over nodes and zones")
        ann = w["spec"]["template"]["metadata"].get("annotations") or {}
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != "9090":
            errors.append(f"{name}: prometheus.io/scrape and prometheus.io/port: \"9090\" annotations are missing")

    policies = by_kind.get("NetworkPolicy", [])
    if not any(p["spec"].get("podSelector") in ({}, None)
               and set(p["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress")
               for p in policies):
        errors.append("no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, no rules)")
    return errors


def extract(docs, out):
    os.makedirs(os.path.join(out, "config"), exist_ok=True)
    secrets = {name_of(d): d.get("stringData") or {} for d in docs if d.get("kind") == "Secret"}
    for d in docs:
        if d.get("kind") == "ConfigMap":
            for key, text in (d.get("data") or {}).items():
                if key.endswith(".toml"):
                    with open(os.path.join(out, "config", key), "w") as f:
                        f.write(text)
        if d.get("kind") in WORKLOADS:
            c = d["spec"]["template"]["spec"]["containers"][0]
            lines = []
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                value = secrets.get(ref["name"], {}).get(ref["key"], "") if ref else e.get("value", "")
                lines.append(f"{e['name']}={value}\n")
            with open(os.path.join(out, "config", f"{name_of(d)}.env"), "w") as f:
                f.writelines(lines)


def main():
    path, out = sys.argv[1], sys.argv[2]
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    errors = check(docs)
    for e in errors:
        print(f"rule: {e}")
    extract(docs, out)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()

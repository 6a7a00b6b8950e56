"""Offline checks of stitch's Kubernetes manifests and Helm chart, for tests/deploy_manifests.rs.

Real tools only: kubernetes-validate (the Kubernetes OpenAPI schemas, strict: unknown fields are
errors) and Helm v4 itself through helm-python-sdk, which loads Helm's Go SDK as a library
(libhelm_c); the package ships no `helm` executable.

    k8s_deploy.py validate --kube 1.33 [--kube ...] FILE...
        validate every document of each file; print them as JSON [{"file", "doc"}]
    k8s_deploy.py chart --kube 1.33 [--kube ...] [--values FILE] [--values-json JSON] CHART
        `helm lint --strict`, then `helm template` (an install with dry_run="client", the code
        path of `helm template`), then validate every rendered document; print JSON
        {"lint": [...], "manifest": "...", "docs": [...], "notes": "..."}

Exit status 1, with every problem on stderr, when anything fails.
"""

import argparse
import json
import sys
import tempfile

import yaml
import kubernetes_validate.utils as kv
import helm_python as helm


def validate_docs(docs, versions, where):
    """Validate each (source, doc) against each Kubernetes version; return the problems."""
    problems = []
    for source, doc in docs:
        name = "%s %s/%s" % (source, doc.get("kind"), (doc.get("metadata") or {}).get("name"))
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                problems.append("%s: %s (Kubernetes %s): %s: %s" % (where, name, version, path, e.message))
            except kv.SchemaNotFoundError as e:
                problems.append("%s: %s: %s" % (where, name, e.message))
    return problems


def load_docs(text, source):
    return [(source, d) for d in yaml.safe_load_all(text) if d is not None]


def cmd_validate(args):
    docs = []
    for f in args.files:
        with open(f) as fh:
            docs += load_docs(fh.read(), f)
    problems = validate_docs(docs, args.kube, "validate")
    json.dump([{"file": s, "doc": d} for s, d in docs], sys.stdout)
    return problems


def cmd_chart(args):
    values = {}
    if args.values:
        with open(args.values) as fh:
            values = yaml.safe_load(fh) or {}
    if args.values_json:
        values = merge(values, json.loads(args.values_json))
    problems = []

    # helm lint --strict: warnings count as errors.
    report = helm.lint(args.chart, values, strict=True, kube_version="v%s.0" % max(args.kube, key=vkey),
                       namespace=args.namespace)
    severities = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
    for m in report.get("messages", []):
        if m.get("severity", 0) >= 2:
            problems.append("helm lint: [%s] %s: %s" % (severities.get(m["severity"]), m.get("path"), m.get("error")))
    for e in report.get("errors", []) or []:
        problems.append("helm lint: %s" % e)

    # helm template: what `helm template` runs, an install dry run on the client with in-memory
    # release storage; no cluster is contacted.
    manifest, notes = "", ""
    try:
        with helm.Config(namespace=args.namespace, storage_driver="memory") as cfg:
            release = cfg.install(args.chart, args.name, values, dry_run="client", namespace=args.namespace)
        manifest = release["manifest"]
        with helm.Chart.load(args.chart) as chart:
            rendered = chart.render(values, name=args.name, namespace=args.namespace)
        notes = next((v for k, v in rendered.items() if k.endswith("/NOTES.txt")), "")
    except helm.HelmError as e:
        problems.append("helm template: %s" % e)
    docs = load_docs(manifest, "helm template")
    problems += validate_docs(docs, args.kube, "validate")
    json.dump({"lint": report.get("messages", []), "manifest": manifest,
               "docs": [d for _, d in docs], "notes": notes}, sys.stdout)
    return problems


def merge(base, over):
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def vkey(v):
    return tuple(int(p) for p in v.split("."))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate")
    v.add_argument("--kube", action="append", required=True)
    v.add_argument("files", nargs="+")
    c = sub.add_parser("chart")
    c.add_argument("--kube", action="append", required=True)
    c.add_argument("--values")
    c.add_argument("--values-json")
    c.add_argument("--name", default="stitch")
    c.add_argument("--namespace", default="default")
    c.add_argument("chart")
    args = p.parse_args()
    problems = cmd_validate(args) if args.cmd == "validate" else cmd_chart(args)
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

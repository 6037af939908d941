#!/usr/bin/env python3
"""Offline checks of the Helm chart and the observability files.

Run through scripts/check-deploy.sh, which provides the virtualenv (requirements.txt).
Nothing here talks to a cluster or the network. Every check prints PASS or FAIL with the
reason; the last line is "N passed, N failed" and the exit status is 1 on any failure.

What is checked, and with what:
  * Chart.yaml kubeVersion gives the oldest and newest Kubernetes version we support; the
    pinned kubernetes-validate must have schemas for both.
  * helm lint --strict (Helm's own lint, through helm-python-sdk's libhelm_c) at both
    versions, with the default values and with every ci/values-*.yaml.
  * helm template (same library) for each scenario; the manifests are written to
    target/deploy-check/<scenario>.yaml for inspection.
  * kubernetes-validate --strict on the manifests at both versions: any ERROR fails, and
    any WARN fails too (an unknown kind or version), except for the ServiceMonitor, whose
    CRD is not in the Kubernetes schemas; the ServiceMonitor gets a structural check here.
  * yamllint (deploy/helm/.yamllint) on values, CI values, rendered manifests and alerts.
  * chart invariants that no schema can see (probes, preStop, $(VAR) references, ...).
  * every ci/bad/*.yaml must be rejected: by render (what helm install does), by helm lint,
    and, where the file says so, by values.schema.json alone.
  * alert rules: promtool check rules when promtool is on PATH; otherwise YAML structure,
    required keys, durations, and each expr parsed by a real PromQL parser
    (promql-parser). Either way: metric names, runbook anchors in docs/operations.md.
  * dashboard: JSON structure, every expr parsed as PromQL, metric names, coverage.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import promql_parser
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[3]
HELM_DIR = ROOT / "deploy" / "helm"
CHART = HELM_DIR / "runnel"
CI = HELM_DIR / "ci"
OBS = ROOT / "deploy" / "observability"
OPS_DOC = ROOT / "docs" / "operations.md"
OUT = ROOT / "target" / "deploy-check"
BIN = Path(sys.executable).parent
RELEASE, NAMESPACE = "runnel", "streams"

# The metrics runneld exports (issue 5 interface). Dashboards and alerts may use only these.
RUNNEL_METRICS = {
    "runnel_requests_total", "runnel_request_bytes_total",
    "runnel_request_duration_seconds_bucket", "runnel_raft_term",
    "runnel_raft_elections_total", "runnel_shard_commit_lag_entries", "runnel_shards",
    "runnel_under_replicated_shards", "runnel_leaderless_shards", "runnel_node_up",
    "runnel_disk_used_bytes", "runnel_disk_free_bytes", "runnel_records_appended_total",
    "runnel_fsync_duration_seconds_bucket",
}
REQUIRED_ALERT_METRICS = {
    "runnel_under_replicated_shards", "runnel_leaderless_shards", "runnel_node_up",
    "runnel_disk_free_bytes", "runnel_fsync_duration_seconds_bucket",
}
REQUIRED_DASHBOARD_METRICS = {
    "runnel_requests_total", "runnel_request_duration_seconds_bucket",
    "runnel_shard_commit_lag_entries", "runnel_shards", "runnel_under_replicated_shards",
    "runnel_leaderless_shards", "runnel_disk_used_bytes", "runnel_disk_free_bytes",
    "runnel_raft_elections_total",
}
PROM_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


class Report:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[tuple[str, str]] = []

    def check(self, name: str, problems: list[str] | str | None, note: str = "") -> bool:
        if isinstance(problems, str):
            problems = [problems]
        if problems:
            self.failed.append((name, problems[0]))
            print(f"FAIL {name}")
            for p in problems[:20]:
                print(f"     - {p}")
            if len(problems) > 20:
                print(f"     - ... and {len(problems) - 20} more")
            return False
        self.passed.append(name)
        print(f"PASS {name}" + (f" ({note})" if note else ""))
        return True

    def run(self, name: str, fn: Callable[[], list[str] | None], note: str = "") -> bool:
        try:
            return self.check(name, fn(), note)
        except Exception as e:  # a crashed check is a failed check, with the reason
            return self.check(name, [f"{type(e).__name__}: {e}"])


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def docs(manifest_text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(manifest_text) if d]


# ---------------------------------------------------------------- Kubernetes versions

def version_bounds() -> tuple[str, str, list[str]]:
    """Oldest and newest supported version from Chart.yaml's kubeVersion '>=A <B'."""
    constraint = load_yaml(CHART / "Chart.yaml")["kubeVersion"]
    low = re.search(r">=\s*v?(\d+)\.(\d+)\.(\d+)", constraint)
    high = re.search(r"<\s*v?(\d+)\.(\d+)\.(\d+)", constraint)
    problems = []
    if not low or not high:
        return "", "", [f"kubeVersion {constraint!r} must read '>=1.X.0-0 <1.Y.0-0'"]
    oldest = f"{low[1]}.{low[2]}.0"
    newest = f"{high[1]}.{int(high[2]) - 1}.0"
    from kubernetes_validate import utils as kv
    available = {kv.major_minor(v) for v in kv.all_versions()}
    for v in (oldest, newest):
        if kv.major_minor(v) not in available:
            problems.append(f"kubernetes-validate {kv_version()} has no schemas for {v} "
                            f"(has {min(available)}..{max(available)}): change kubeVersion "
                            "or the pinned kubernetes-validate")
    return oldest, newest, problems


def kv_version() -> str:
    from kubernetes_validate.version import __version__
    return __version__


# ---------------------------------------------------------------- Helm

def lint(values: dict | None, kube_version: str) -> list[str]:
    report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{kube_version}",
                       namespace=NAMESPACE)
    problems = list(report.get("errors") or [])
    for m in report.get("messages") or []:
        if m["severity"] >= 2:  # 2 = warning (an error under --strict), 3 = error
            problems.append(f"{m['path']}: {m['error']}")
    return problems


def render(values: dict | None) -> str:
    """helm template: every manifest, in file order, with '# Source:' headers."""
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    parts = []
    for path in sorted(rendered):
        body = rendered[path].strip("\n")
        if path.endswith("NOTES.txt") or not [d for d in yaml.safe_load_all(body) if d]:
            continue
        for doc in re.split(r"(?m)^---\s*$", body):
            doc = doc.strip("\n")
            if doc:
                parts.append(f"---\n# Source: {path}\n{doc}\n")
    return "".join(parts)


def scenarios() -> dict[str, dict | None]:
    found: dict[str, dict | None] = {"default": None}
    for path in sorted(CI.glob("values-*.yaml")):
        found[path.stem.removeprefix("values-")] = load_yaml(path) or {}
    return found


# ---------------------------------------------------------------- external tools

def yamllint(paths: list[Path]) -> list[str]:
    proc = subprocess.run(
        [str(BIN / "yamllint"), "--strict", "-f", "parsable", "-c", str(HELM_DIR / ".yamllint"),
         *map(str, paths)], capture_output=True, text=True)
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if l.strip()]
    if proc.returncode != 0 and not lines:
        lines = [f"yamllint exited {proc.returncode}"]
    return [l.replace(str(ROOT) + "/", "") for l in lines] if proc.returncode else []


def kubernetes_validate(files: list[Path], versions: list[str]) -> tuple[list[str], list[str]]:
    """Returns (problems, allowed warnings)."""
    args = [str(BIN / "kubernetes-validate"), "--strict", "--quiet"]
    for v in versions:
        args += ["-k", v]
    proc = subprocess.run(args + [str(f) for f in files], capture_output=True, text=True)
    problems, allowed = [], []
    for line in (proc.stdout + proc.stderr).splitlines():
        line = line.replace(str(ROOT) + "/", "")
        if not line.strip():
            continue
        if line.startswith("WARN") and "ServiceMonitor" in line:
            allowed.append(line)
        else:  # ERROR, FATAL, any other WARN (unknown kind or apiVersion), anything else
            problems.append(line)
    if proc.returncode != 0 and not problems:
        problems.append(f"kubernetes-validate exited {proc.returncode}")
    return problems, allowed


# ---------------------------------------------------------------- chart invariants

def by_kind(manifests: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for m in manifests:
        out.setdefault(m["kind"], []).append(m)
    return out


def invariants(manifests: list[dict], values: dict) -> list[str]:
    p: list[str] = []
    k = by_kind(manifests)
    sts = k["StatefulSet"][0]
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    c = pod["containers"][0]
    services = {s["metadata"]["name"]: s for s in k["Service"]}
    headless = services.get(spec["serviceName"])
    if spec.get("podManagementPolicy") != "Parallel":
        p.append("StatefulSet podManagementPolicy must be Parallel")
    if not headless or headless["spec"].get("clusterIP") != "None" \
            or headless["spec"].get("publishNotReadyAddresses") is not True:
        p.append("serviceName must be a headless Service with publishNotReadyAddresses: true")
    for s in services.values():
        if any(pod_labels.get(a) != b for a, b in s["spec"]["selector"].items()):
            p.append(f"Service {s['metadata']['name']} selector does not match the pods")
    if len(services) != 2:
        p.append(f"expected a headless and a client Service, found {sorted(services)}")
    if c["command"][0] in ("sh", "/bin/sh", "bash", "/bin/bash"):
        p.append("the image has no shell: command must not use one")
    args = c.get("args", [])
    if "--node-id-from-hostname" not in args:
        p.append("runneld args must include --node-id-from-hostname")
    if not any(a.startswith("--advertise=$(POD_NAME)." + spec["serviceName"] + ".") for a in args):
        p.append("--advertise must be <pod>.<headless service>...")
    env_names = {e["name"] for e in c.get("env", [])}
    hook = (c.get("lifecycle") or {}).get("preStop", {}).get("exec", {}).get("command", [])
    for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(args + c["command"])):
        if ref not in env_names:
            p.append(f"$({ref}) is not defined in the container env: Kubernetes would pass it literally")
    if any("$(" in a for a in hook):
        p.append("preStop exec commands get no $(VAR) expansion")
    ports = {cp["name"]: cp["containerPort"] for cp in c["ports"]}
    for probe in ("startupProbe", "livenessProbe"):
        if c.get(probe, {}).get("grpc", {}).get("port") != ports.get("grpc"):
            p.append(f"{probe} must be a gRPC probe on the grpc port")
    rp = c.get("readinessProbe", {}).get("httpGet", {})
    if rp.get("path") != "/readyz" or rp.get("port") not in ("admin", ports.get("admin")):
        p.append("readinessProbe must GET /readyz on the admin port")
    grace = pod["terminationGracePeriodSeconds"]
    if values["scaleDown"]["drain"]:
        if hook[:3] != ["/usr/local/bin/runnel", "cluster", "drain"] or "--wait" not in hook:
            p.append(f"preStop must run `runnel cluster drain ... --wait`, got {hook}")
        timeout = next((int(a.split("=")[1].rstrip("s")) for a in hook if a.startswith("--timeout=")), None)
        if timeout is None or timeout >= grace:
            p.append(f"drain --timeout ({timeout}) must be below terminationGracePeriodSeconds ({grace})")
        if not k.get("Role") or not k.get("RoleBinding"):
            p.append("scale-down drain needs the Role/RoleBinding to read the StatefulSet")
        if pod.get("automountServiceAccountToken") is not True:
            p.append("scale-down drain needs the service account token")
    elif hook:
        p.append("scaleDown.drain=false must render no preStop drain")
    ctx = pod.get("securityContext", {})
    if ctx.get("runAsUser") != 10001 or ctx.get("fsGroup") != 10001 or not ctx.get("runAsNonRoot"):
        p.append("pods must run as uid 10001 with fsGroup 10001 (the image's user)")
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vct = [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]]
    if mounts.get("/data") not in vct:
        p.append("/data must be mounted from a volumeClaimTemplate")
    p += config_invariants(k["ConfigMap"][0], values)
    if values["podDisruptionBudget"]["enabled"]:
        pdb = k["PodDisruptionBudget"][0]["spec"]
        if pdb.get("maxUnavailable") != 1:
            p.append("PodDisruptionBudget maxUnavailable must be 1")
        if any(pod_labels.get(a) != b for a, b in pdb["selector"]["matchLabels"].items()):
            p.append("PodDisruptionBudget selector does not match the pods")
    zone_env = [e for e in c.get("env", []) if e["name"] == "RUNNEL_ZONE"]
    if values["zones"]["enabled"]:
        key = values["zones"]["topologyKey"]
        if not zone_env or zone_env[0]["valueFrom"]["fieldRef"]["fieldPath"] != f"metadata.labels['{key}']":
            p.append("zones.enabled: RUNNEL_ZONE must come from the pod's zone label (downward API)")
        if "--label=zone=$(RUNNEL_ZONE)" not in args:
            p.append("zones.enabled: runneld must get --label=zone=$(RUNNEL_ZONE)")
    elif zone_env:
        p.append("zones disabled but RUNNEL_ZONE rendered")
    if values["metrics"]["serviceMonitor"]["enabled"]:
        p += service_monitor_invariants(k, headless, services)
    elif "ServiceMonitor" in k:
        p.append("ServiceMonitor rendered while metrics.serviceMonitor.enabled is false")
    return p


def config_invariants(cm: dict, values: dict) -> list[str]:
    p = []
    conf = tomllib.loads(cm["data"]["runneld.toml"])
    members = conf.get("initial-cluster", "").split(",")
    ids = [m.split("=", 1)[0] for m in members]
    if ids != [str(i + 1) for i in range(values["initialVoters"])]:
        p.append(f"initial-cluster ids must be 1..initialVoters, got {ids}")
    for key in ("listen", "admin-listen", "data-dir", "join", "log-format"):
        if key not in conf:
            p.append(f"runneld.toml lacks {key}")
    if conf.get("data-dir") != "/data":
        p.append("data-dir must be /data (the image's volume)")
    return p


def service_monitor_invariants(k: dict, headless: dict | None, services: dict) -> list[str]:
    p = []
    sm = k.get("ServiceMonitor", [None])[0]
    if not sm or sm.get("apiVersion") != "monitoring.coreos.com/v1":
        return ["metrics.serviceMonitor.enabled must render a monitoring.coreos.com/v1 ServiceMonitor"]
    sel = sm["spec"]["selector"]["matchLabels"]
    matched = [n for n, s in services.items()
               if all(s["metadata"]["labels"].get(a) == b for a, b in sel.items())]
    if not headless or matched != [headless["metadata"]["name"]]:
        p.append(f"ServiceMonitor must select exactly the headless Service, selects {matched}")
    port_names = {pt["name"] for pt in (headless or {}).get("spec", {}).get("ports", [])}
    for ep in sm["spec"].get("endpoints", []):
        if ep.get("port") not in port_names:
            p.append(f"ServiceMonitor endpoint port {ep.get('port')!r} is not a port of the headless Service")
        for key in ("interval", "scrapeTimeout"):
            if key in ep and not PROM_DURATION.match(ep[key]):
                p.append(f"ServiceMonitor {key} {ep[key]!r} is not a duration")
    return p


# ---------------------------------------------------------------- negative tests

def bad_values_rejected(path: Path) -> list[str]:
    values = load_yaml(path) or {}
    p = []
    try:
        render(values)
        p.append("helm template accepted it")
    except (helm.HelmValuesError, helm.HelmRenderError) as e:
        print(f"     rejected: {str(e).strip().splitlines()[-1].strip()}")
    if "values.schema.json" in path.read_text().splitlines()[0]:
        # helm lint runs the schema too; it cannot see template `fail` checks, which
        # Helm's lint mode turns into log lines.
        if not lint(values, "1.37.0"):
            p.append("helm lint --strict accepted it")
        with helm.Chart.load(str(CHART)) as chart:
            try:
                chart.validate_schema(values)
                p.append("values.schema.json accepted it")
            except helm.HelmValuesError:
                pass
    return p


# ---------------------------------------------------------------- PromQL

def promql_metrics(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit, None)
    return names


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors: lower case, punctuation dropped, spaces to '-'."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"[`*_]", "", m[1]).lower()
            anchors.add(re.sub(r"[^a-z0-9 -]", "", text).replace(" ", "-"))
    return anchors


def alert_rules() -> tuple[list[str], str]:
    path = OBS / "runnel-alerts.yaml"
    p: list[str] = []
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if promtool:
        proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
        if proc.returncode:
            p += [l.strip() for l in (proc.stdout + proc.stderr).splitlines()
                  if l.strip() and not l.startswith("Checking ") and l.strip() != "FAILED:"]
        how = f"promtool check rules ({promtool})"
    else:
        how = "no promtool: structure + promql-parser " + promql_parser_version()
    doc = load_yaml(path)
    anchors = heading_anchors(OPS_DOC.read_text()) if OPS_DOC.exists() else set()
    if not OPS_DOC.exists():
        p.append("docs/operations.md is missing")
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list) or not doc["groups"]:
        return p + ["top level must be a mapping with a non-empty `groups` list"], how
    seen_groups, seen_alerts, used = set(), set(), set()
    for g in doc["groups"]:
        name = g.get("name")
        if not name or name in seen_groups:
            p.append(f"group name missing or repeated: {name!r}")
        seen_groups.add(name)
        for r in g.get("rules") or []:
            p += check_rule(r, seen_alerts, anchors, used)
        if not g.get("rules"):
            p.append(f"group {name} has no rules")
    missing = REQUIRED_ALERT_METRICS - used
    if missing:
        p.append(f"no alert uses {sorted(missing)}")
    return p, how


def check_rule(r: dict, seen: set[str], anchors: set[str], used: set[str]) -> list[str]:
    p = []
    alert = r.get("alert")
    where = f"alert {alert}"
    if not alert or not re.match(r"^[A-Z][A-Za-z0-9]+$", alert) or alert in seen:
        p.append(f"{where}: name missing, not CamelCase, or repeated")
    seen.add(alert)
    unknown = set(r) - {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
    if unknown:
        p.append(f"{where}: unknown keys {sorted(unknown)}")
    expr = r.get("expr")
    if not isinstance(expr, str) or not expr.strip():
        return p + [f"{where}: expr missing or empty"]
    try:
        names = promql_metrics(expr)
    except ValueError as e:
        return p + [f"{where}: expr does not parse: {e}"]
    used |= names
    if names - RUNNEL_METRICS:
        p.append(f"{where}: unknown metrics {sorted(names - RUNNEL_METRICS)}")
    if "for" in r and not PROM_DURATION.match(str(r["for"])):
        p.append(f"{where}: `for` {r['for']!r} is not a duration")
    if (r.get("labels") or {}).get("severity") not in ("warning", "critical"):
        p.append(f"{where}: labels.severity must be warning or critical")
    ann = r.get("annotations") or {}
    for key in ("summary", "runbook"):
        if not ann.get(key):
            p.append(f"{where}: annotation {key} missing")
    runbook = ann.get("runbook", "")
    if runbook and (not runbook.startswith("docs/operations.md#")
                    or runbook.split("#", 1)[1] not in anchors):
        p.append(f"{where}: runbook {runbook!r} is not a heading of docs/operations.md")
    return p


def promql_parser_version() -> str:
    from importlib.metadata import version
    return version("promql-parser")


def dashboard() -> list[str]:
    d = json.loads((OBS / "runnel-dashboard.json").read_text())
    p, used, ids = [], set(), set()
    for key in ("uid", "title", "panels", "schemaVersion"):
        if key not in d:
            p.append(f"dashboard lacks {key}")
    variables = {v["name"] for v in d.get("templating", {}).get("list", [])}
    for panel in d.get("panels", []):
        if panel.get("id") in ids:
            p.append(f"panel id {panel.get('id')} repeated")
        ids.add(panel.get("id"))
        if panel.get("type") == "row":
            continue
        targets = panel.get("targets") or []
        if not targets:
            p.append(f"panel {panel.get('title')!r} has no targets")
        for t in targets:
            expr = t.get("expr", "")
            for var in re.findall(r"\$\{?([A-Za-z_]\w*)", expr):
                if var not in variables and not var.startswith("__"):
                    p.append(f"panel {panel['title']!r}: undefined variable ${var}")
            concrete = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
            try:
                used |= promql_metrics(concrete)
            except ValueError as e:
                p.append(f"panel {panel['title']!r}: expr does not parse: {e}: {expr}")
    if used - RUNNEL_METRICS:
        p.append(f"unknown metrics {sorted(used - RUNNEL_METRICS)}")
    if REQUIRED_DASHBOARD_METRICS - used:
        p.append(f"dashboard does not show {sorted(REQUIRED_DASHBOARD_METRICS - used)}")
    return p


def doc_links() -> list[str]:
    text = OPS_DOC.read_text()
    anchors = heading_anchors(text)
    return [f"link to #{a} has no heading" for a in re.findall(r"\]\(#([^)]+)\)", text)
            if a not in anchors]


# ---------------------------------------------------------------- main

def main() -> int:
    start = time.monotonic()
    r = Report()
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"tools: Helm library {helm.helm_sdk_version()} (libhelm_c {helm.helm_c_version()}, "
          f"helm-python-sdk {helm.__version__}), kubernetes-validate {kv_version()}, "
          f"promql-parser {promql_parser_version()}, Python {sys.version.split()[0]}")
    oldest, newest, problems = version_bounds()
    r.check(f"kubeVersion bounds: oldest {oldest}, newest {newest}", problems)
    versions = [v for v in (oldest, newest) if v]

    r.run("yamllint: values, CI values, Chart.yaml, alerts", lambda: yamllint(
        [CHART / "values.yaml", CHART / "Chart.yaml", HELM_DIR / ".yamllint",
         *sorted(CI.glob("*.yaml")), *sorted((CI / "bad").glob("*.yaml")),
         OBS / "runnel-alerts.yaml"]))

    manifests: dict[str, Path] = {}
    for name, values in scenarios().items():
        for v in versions if name == "default" else versions[-1:]:
            r.run(f"helm lint --strict [{name}] kube {v}", lambda: lint(values, v))
        out = OUT / f"{name}.yaml"

        def do_render() -> list[str]:
            out.write_text(render(values))
            manifests[name] = out
            return []
        if not r.run(f"helm template [{name}]", do_render, note=str(out.relative_to(ROOT))):
            continue
        with helm.Chart.load(str(CHART)) as chart:
            merged = chart.merge_values(values)
        r.run(f"chart invariants [{name}]", lambda: invariants(docs(out.read_text()), merged))

    if manifests:
        files = list(manifests.values())
        r.run("yamllint: rendered manifests", lambda: yamllint(files))
        for v in versions:
            problems, allowed = kubernetes_validate(files, [v])
            r.check(f"kubernetes-validate --strict kube {v} [{', '.join(manifests)}]", problems,
                    note="; ".join(f"allowed: {a.split(' ', 2)[-1]}" for a in sorted(set(
                        re.sub(r"^WARN \S+ ", "WARN ", a) for a in allowed))))

    for bad in sorted((CI / "bad").glob("*.yaml")):
        r.run(f"bad values rejected: {bad.relative_to(ROOT)}", lambda: bad_values_rejected(bad))

    how: list[str] = []

    def rules() -> list[str]:
        problems, method = alert_rules()
        how.append(method)
        return problems
    r.run("alert rules deploy/observability/runnel-alerts.yaml", rules)
    if how:
        print(f"     checked with: {how[0]}")
    r.run("dashboard deploy/observability/runnel-dashboard.json", dashboard)
    r.run("docs/operations.md: every #anchor link names a heading", doc_links)

    print()
    print(f"summary ({time.monotonic() - start:.1f}s):")
    for name, why in r.failed:
        print(f"  FAILED {name}: {why}")
    if not r.failed:
        print("  all checks passed")
    print(f"{len(r.passed)} passed, {len(r.failed)} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())

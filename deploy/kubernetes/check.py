"""What the JSON schemas cannot see in a rendered overlay: that it agrees with the server and
its image. Reads one `kubectl kustomize` output (a file, or - for stdin); prints each problem
and exits 1 if there is any.

- every setting in the ConfigMap and the container's env is a variable the server reads
  (`env = "..."` in crates/bge-m3-server/src/config.rs, the HF_* of the core's hub module,
  RUST_LOG), so a misspelt one cannot be silently ignored;
- terminationGracePeriodSeconds outlasts the preStop pause, SHUTDOWN_TIMEOUT and the 5 s the
  last answers get, so the kubelet never SIGKILLs a drain;
- the pod runs as the image's USER, hardened (non-root, read-only root, no capabilities,
  seccomp RuntimeDefault, no privilege escalation);
- the probes ask /health on the named port, which is 8101 like the Service's and PORT's;
- the Service, PodDisruptionBudget and HPA select or target this Deployment;
- HF_HOME is a mounted volume (the root filesystem is read-only), and so is /tmp;
- memory and CPU limits are at least their requests;
- every bge_m3_* metric that an alert or the HPA names is one the server exports
  (crates/bge-m3-server/src/metrics.rs).
"""

import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# What the server adds to SHUTDOWN_TIMEOUT for answers still being written (ABORT_GRACE).
ABORT_GRACE_S = 5


def known_settings():
    config = (REPO / "crates/bge-m3-server/src/config.rs").read_text()
    names = set(re.findall(r'env = "([A-Z_]+)"', config))
    hub = (REPO / "crates/bge-m3-core/src/hub/mod.rs").read_text()
    names |= set(re.findall(r'"(HF_[A-Z_]+)"', hub))
    return names | {"RUST_LOG"}


def exported_metrics():
    """The string literals of metrics.rs that can be metric names (a superset: help texts have
    spaces, so they do not match)."""
    source = (REPO / "crates/bge-m3-server/src/metrics.rs").read_text()
    return set(re.findall(r'"([a-z][a-z_]+)"', source))


def image_uid():
    dockerfile = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER (\d+)", dockerfile, re.M)
    return int(users[-1])


def quantity(q):
    """Kubernetes quantities in bytes or cores, enough for cpu and memory."""
    q = str(q)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "m": 1e-3}
    for unit, factor in units.items():
        if q.endswith(unit):
            return float(q[: -len(unit)]) * factor
    return float(q)


def check(docs):
    problems = []
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    (deployment,) = by_kind["Deployment"]
    (configmap,) = [c for c in by_kind["ConfigMap"] if c["metadata"]["name"].startswith("bge-m3-settings")]
    settings = configmap["data"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]

    known = known_settings()
    env_names = [e["name"] for e in container.get("env", [])]
    for name in list(settings) + env_names:
        if name not in known:
            problems.append(f"{name} is not a setting the server reads")
    if "API_KEY" in settings:
        problems.append("API_KEY is in the ConfigMap; it belongs in the Secret")

    sleep = 0
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if "exec" in pre_stop:
        command = pre_stop["exec"]["command"]
        if command[0] == "sleep":
            sleep = int(command[1])
    drain = int(settings.get("SHUTDOWN_TIMEOUT", 30))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= sleep + drain + ABORT_GRACE_S:
        problems.append(
            f"terminationGracePeriodSeconds {grace} <= preStop {sleep} + SHUTDOWN_TIMEOUT {drain} + {ABORT_GRACE_S}"
        )

    uid = image_uid()
    pod_sc, sc = pod.get("securityContext", {}), container.get("securityContext", {})
    if pod_sc.get("runAsUser") != uid:
        problems.append(f"runAsUser {pod_sc.get('runAsUser')} is not the image's USER {uid}")
    if not (pod_sc.get("runAsNonRoot") or sc.get("runAsNonRoot")):
        problems.append("runAsNonRoot is not set")
    if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("seccompProfile is not RuntimeDefault")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("the root filesystem is writable")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append("capabilities are not all dropped")

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    if ports.get("http") != int(settings.get("PORT", 8101)) or ports.get("http") != 8101:
        problems.append(f"container port http {ports.get('http')} is not PORT (8101)")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != "/health" or get.get("port") != "http":
            problems.append(f"{probe} does not ask /health on port http")

    for service in by_kind.get("Service", []):
        if service["spec"]["selector"].items() - labels.items():
            problems.append(f"Service {service['metadata']['name']} selects no pod of the Deployment")
        if [p["port"] for p in service["spec"]["ports"]] != [8101]:
            problems.append("the Service is not on 8101")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if pdb["spec"]["selector"]["matchLabels"].items() - labels.items():
            problems.append("the PodDisruptionBudget selects no pod of the Deployment")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        target = hpa["spec"]["scaleTargetRef"]
        if (target["kind"], target["name"]) != ("Deployment", deployment["metadata"]["name"]):
            problems.append("the HPA does not scale the Deployment")

    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"] for v in pod.get("volumes", [])}
    for path in (settings.get("HF_HOME", "/data"), "/tmp"):
        mount = mounts.get(path)
        if mount is None or mount["name"] not in volumes or mount.get("readOnly"):
            problems.append(f"{path} is not a writable volume (the root filesystem is read-only)")
    model = settings.get("MODEL_PATH", "")
    if model.startswith("/") and model not in mounts:
        problems.append(f"MODEL_PATH {model} is not a mounted volume")

    resources = container.get("resources", {})
    for name, request in resources.get("requests", {}).items():
        limit = resources.get("limits", {}).get(name)
        if name in ("cpu", "memory") and (limit is None or quantity(limit) < quantity(request)):
            problems.append(f"{name} limit {limit} is below its request {request}")
    exported = exported_metrics()
    named = set()
    for rule in by_kind.get("PrometheusRule", []):
        for group in rule["spec"]["groups"]:
            for r in group["rules"]:
                named |= set(re.findall(r"\bbge_m3_([a-z_]+)", r["expr"]))
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Pods":
                named |= set(re.findall(r"^bge_m3_([a-z_]+)$", metric["pods"]["metric"]["name"]))
    for name in sorted(named):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in exported and base not in exported:
            problems.append(f"bge_m3_{name} is not a metric the server exports")
    return problems


def main():
    source = sys.stdin if sys.argv[1] == "-" else open(sys.argv[1])
    docs = [d for d in yaml.safe_load_all(source) if d]
    problems = check(docs)
    for problem in problems:
        print(f"  {problem}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()

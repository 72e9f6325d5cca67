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

A rendering with a Job (encode-job: bge-m3-encode as an Indexed Job) is checked against the
encoder instead:

- the Job is Indexed, with backoffLimitPerIndex and restartPolicy Never, and parallelism at
  most completions; its failure policy names its container;
- the container runs bge-m3-encode, which the Dockerfile puts in the image, with only flags the
  encoder has (crates/bge-m3-encode/src/main.rs), and environment variables it reads;
- --shard is $(JOB_COMPLETION_INDEX)/N with N the Job's completions, JOB_COMPLETION_INDEX
  comes from the pod's completion index, --resume is there (a retried index resumes), and the
  output's name holds the index, so no two shards share a file;
- the inputs are on mounted volumes and the output on a writable one; HF_HOME is a mounted
  volume (read-only only with HF_HUB_OFFLINE=1);
- --model and --revision are base/settings.env's MODEL_PATH and MODEL_REVISION: the documents
  are encoded with the weights the server encodes queries with;
- the same hardening, uid and resources as the server's pod, and a whole number of CPUs (the
  encoder's threads follow the CPU quota, rounded down).
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


def hardening(pod, container):
    """The pod runs as the image's USER, hardened."""
    problems = []
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
    return problems


def limits_cover_requests(container):
    problems = []
    resources = container.get("resources", {})
    for name, request in resources.get("requests", {}).items():
        limit = resources.get("limits", {}).get(name)
        if name in ("cpu", "memory") and (limit is None or quantity(limit) < quantity(request)):
            problems.append(f"{name} limit {limit} is below its request {request}")
    return problems


def encoder_flags():
    """bge-m3-encode's flags, from the fields of its clap Args (main.rs): each `--name` (and
    `-x` for a short one) with whether it takes a value (every field but a bool)."""
    source = (REPO / "crates/bge-m3-encode/src/main.rs").read_text()
    struct = source[source.index("pub struct Args {") :]
    struct = struct[: struct.index("\n}\n")]
    flags = {}
    attribute = ""
    for line in struct.splitlines():
        line = line.strip()
        if line.startswith("#[arg("):
            attribute = line
        field = re.match(r"pub (\w+): (.+),$", line)
        if field:
            name, kind = field.groups()
            takes_value = kind != "bool"
            if re.search(r"\blong\b", attribute):
                flags["--" + name.replace("_", "-")] = takes_value
            if re.search(r"\bshort\b", attribute):
                flags["-" + name[0]] = takes_value
            attribute = ""
    return flags


def encoder_env():
    source = (REPO / "crates/bge-m3-encode/src/main.rs").read_text()
    hub = (REPO / "crates/bge-m3-core/src/hub/mod.rs").read_text()
    return set(re.findall(r'env = "([A-Z_]+)"', source)) | set(re.findall(r'"(HF_[A-Z_]+)"', hub))


def server_settings():
    """base/settings.env as a dict."""
    settings = {}
    for line in (REPO / "deploy/kubernetes/base/settings.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            settings[name.strip()] = value.strip()
    return settings


def parse_args(args, flags):
    """The flags' values (a list each; None for a switch) and the positional arguments, or the
    problems of arguments the encoder does not take."""
    values, positional, problems = {}, [], []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, has_value, value = arg.partition("=")
        if name not in flags:
            problems.append(f"{name} is not a flag of bge-m3-encode")
            continue
        if flags[name] and not has_value:
            if i == len(args):
                problems.append(f"{name} has no value")
                continue
            value = args[i]
            i += 1
        elif not flags[name] and has_value:
            problems.append(f"{name} takes no value")
        values.setdefault("--output" if name == "-o" else name, []).append(
            value if flags[name] else None
        )
    return values, positional, problems


def mount_of(path, mounts):
    """The volume mount holding `path`, if any (the longest mountPath that prefixes it)."""
    best = None
    for mount in mounts:
        root = mount["mountPath"].rstrip("/") + "/"
        if (path + "/").startswith(root) and (best is None or len(root) > len(best["mountPath"])):
            best = mount
    return best


def check_job(docs):
    problems = []
    jobs = [d for d in docs if d["kind"] == "Job"]
    if len(jobs) != 1 or len(docs) != 1:
        return [f"expected one Job and nothing else, found {[d['kind'] for d in docs]}"]
    (job,) = jobs
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    completions = spec.get("completions")
    if spec.get("completionMode") != "Indexed":
        problems.append("completionMode is not Indexed: pods get no shard index")
    if not completions:
        problems.append("completions is not set: an Indexed Job needs the number of shards")
        completions = 0
    if spec.get("parallelism", 1) > completions:
        problems.append(f"parallelism {spec.get('parallelism')} is above completions {completions}")
    if not spec.get("backoffLimitPerIndex"):
        problems.append("backoffLimitPerIndex is not set: one failing shard would use up every retry")
    if pod.get("restartPolicy") != "Never":
        problems.append("restartPolicy is not Never (backoffLimitPerIndex needs it)")
    for rule in spec.get("podFailurePolicy", {}).get("rules", []):
        named = rule.get("onExitCodes", {}).get("containerName")
        if named is not None and named != container["name"]:
            problems.append(f"a podFailurePolicy rule names the container {named}, not {container['name']}")

    binary = "/usr/local/bin/bge-m3-encode"
    if container.get("command") != [binary]:
        problems.append(f"the command is {container.get('command')}, not [{binary}]")
    dockerfile = (REPO / "Dockerfile").read_text()
    if not re.search(r"^COPY --from=builder .*\bbge-m3-encode\b.* /usr/local/bin/", dockerfile, re.M):
        problems.append("the Dockerfile does not copy bge-m3-encode into /usr/local/bin")

    env = {e["name"]: e for e in container.get("env", [])}
    known = encoder_env() | {"JOB_COMPLETION_INDEX"}
    for name in env:
        if name not in known:
            problems.append(f"{name} is not an environment variable bge-m3-encode reads")
    index = env.get("JOB_COMPLETION_INDEX", {}).get("valueFrom", {}).get("fieldRef", {})
    if index.get("fieldPath") != "metadata.annotations['batch.kubernetes.io/job-completion-index']":
        problems.append("JOB_COMPLETION_INDEX is not the pod's completion index annotation")

    args = container.get("args", [])
    for arg in args:
        for name in re.findall(r"\$\((\w+)\)", arg):
            if name not in env:
                problems.append(f"{arg} names $({name}), which the container's env does not declare")
    values, inputs, wrong = parse_args(args, encoder_flags())
    problems += wrong
    for flag, given in values.items():
        if len(given) > 1 and given[0] is not None:
            problems.append(f"{flag} is given {len(given)} times")
    first = lambda flag: (values.get(flag) or [None])[0]
    shard = f"$(JOB_COMPLETION_INDEX)/{completions}"
    if first("--shard") != shard:
        problems.append(f"--shard is {first('--shard')}, not {shard} (the Job's completions)")
    if "--resume" not in values:
        problems.append("--resume is missing: a retried index would encode its shard from the start")
    output = first("--output")
    mounts = container.get("volumeMounts", [])
    volumes = {v["name"] for v in pod.get("volumes", [])}
    if output is None:
        problems.append("--output is missing: the shards would write to the pods' stdout")
    else:
        if "$(JOB_COMPLETION_INDEX)" not in output:
            problems.append(f"--output {output} does not hold $(JOB_COMPLETION_INDEX): the shards would share one file")
        mount = mount_of(output, mounts)
        if mount is None or mount["name"] not in volumes or mount.get("readOnly"):
            problems.append(f"--output {output} is not on a writable volume")
    if not inputs:
        problems.append("no input is named: the encoder would read its stdin")
    for path in inputs:
        mount = mount_of(path, mounts)
        if mount is None or mount["name"] not in volumes:
            problems.append(f"the input {path} is not on a mounted volume")

    home = env.get("HF_HOME", {}).get("value")
    offline = env.get("HF_HUB_OFFLINE", {}).get("value", "").upper() in ("1", "ON", "YES", "TRUE")
    mount = home and next((m for m in mounts if m["mountPath"] == home), None)
    if not mount or mount["name"] not in volumes:
        problems.append(f"HF_HOME {home} is not a mounted volume")
    elif mount.get("readOnly") and not offline:
        problems.append(f"HF_HOME {home} is read-only but HF_HUB_OFFLINE is not 1: a download would fail")
    settings = server_settings()
    for flag, setting in (("--model", "MODEL_PATH"), ("--revision", "MODEL_REVISION")):
        if first(flag) != settings.get(setting):
            problems.append(
                f"{flag} is {first(flag)}, the server's {setting} is {settings.get(setting)}: "
                "documents and queries would be encoded by different weights"
            )

    problems += hardening(pod, container)
    problems += limits_cover_requests(container)
    cpu = container.get("resources", {}).get("limits", {}).get("cpu")
    if cpu is None or quantity(cpu) != int(quantity(cpu)):
        problems.append(f"the CPU limit {cpu} is not a whole number of CPUs")
    return problems


def check(docs):
    if any(d["kind"] == "Job" for d in docs):
        return check_job(docs)
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

    problems += hardening(pod, container)

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

    problems += limits_cover_requests(container)
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

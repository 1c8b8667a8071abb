#!/usr/bin/env python3
"""Policy test of the rendered Kubernetes manifests and the compose file.

    python3 tests/deploy/test_policy.py RENDERED.yaml... [--compose COMPOSE] [--dockerfile DOCKERFILE]

Each RENDERED.yaml is one overlay as `kubectl kustomize` prints it. The rules:

- every container of a long-running workload has liveness and readiness probes whose ports
  exist in the container;
- every container has CPU and memory requests and limits;
- every container runs as non-root (its own or its pod's securityContext, never uid 0), with a
  read-only root filesystem, no privilege escalation and every capability dropped;
- every image is pinned: a tag that is not `latest`, or a digest;
- every Deployment or StatefulSet with more than one replica (or an autoscaler minimum above
  one) has a PodDisruptionBudget selecting its pods, and its replicas are spread over nodes
  (pod anti-affinity or a topology spread constraint); an autoscaled one sets no replicas;
- autoscalers and Services point at workloads that exist;
- a default-deny NetworkPolicy exists (ingress and egress), and every pod is selected by a
  policy that allows it something;
- the gateway's upstream lists name every pod a StatefulSet can have (up to its autoscaler's
  maxReplicas) through its headless Service, which publishes not-ready addresses;
- terminationGracePeriodSeconds outlasts each container's preStop sleep;
- each service gets the variables it cannot start without, and exactly one JWT key source;
- the compose file: the services run read-only, as non-root, without capabilities; only the
  gateway publishes a port; images are pinned;
- the Dockerfile: multi-stage with a cached dependency step, pinned base images, a non-root
  final stage.

Before the real manifests, the checker is run on deliberately broken copies to show that it
rejects them. Prints one line per failure naming the object and the rule, then
`N passed, M failed`; exits 1 if anything failed. Needs PyYAML.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import yaml

POD_WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}
SCALABLE = {"Deployment", "StatefulSet"}
UPSTREAM_VARS = ("CALLS_API_UPSTREAMS", "SIGNALING_UPSTREAMS")


class Checks:
    """Counts checks; keeps the failures as `object: rule: detail` lines."""

    def __init__(self) -> None:
        self.passed = 0
        self.failures: list[str] = []

    def expect(self, ok: bool, obj: str, rule: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failures.append(f"{obj}: {rule}" + (f" ({detail})" if detail else ""))
        return ok


def name_of(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{doc.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


def pod_spec(doc: dict) -> dict | None:
    if doc.get("kind") not in POD_WORKLOADS:
        return None
    return ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}


def pod_labels(doc: dict) -> dict:
    return (((doc.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def selects(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a label set."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def image_pinned(image: str) -> tuple[bool, str]:
    if "@sha256:" in image:
        return True, ""
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False, f"{image} has no tag (that is :latest)"
    tag = last.rsplit(":", 1)[1]
    if tag == "latest":
        return False, f"{image} uses :latest"
    return True, ""


def probe_port_ok(probe: dict, container: dict) -> bool:
    ports = container.get("ports") or []
    names = {p.get("name") for p in ports if p.get("name")}
    numbers = {p.get("containerPort") for p in ports}
    for kind in ("httpGet", "tcpSocket", "grpc"):
        if kind in probe:
            port = probe[kind].get("port")
            return port in names or port in numbers
    return "exec" in probe


def check_containers(doc: dict, checks: Checks) -> None:
    spec = pod_spec(doc)
    if spec is None:
        return
    obj = name_of(doc)
    pod_sc = spec.get("securityContext") or {}
    long_running = doc["kind"] in LONG_RUNNING
    grace = spec.get("terminationGracePeriodSeconds", 30)
    containers = [("container", c) for c in spec.get("containers") or []]
    containers += [("initContainer", c) for c in spec.get("initContainers") or []]
    checks.expect(bool(spec.get("containers")), obj, "has containers")
    for role, c in containers:
        where = f"{obj} {role} {c.get('name')}"
        sc = c.get("securityContext") or {}
        ok, why = image_pinned(str(c.get("image", "")))
        checks.expect(ok, where, "image pinned (tag other than latest, or digest)", why)
        if long_running and role == "container":
            for probe in ("livenessProbe", "readinessProbe"):
                present = isinstance(c.get(probe), dict)
                checks.expect(present, where, f"has a {probe}")
                if present:
                    checks.expect(probe_port_ok(c[probe], c), where, f"{probe} targets a declared container port")
        res = c.get("resources") or {}
        for section in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                checks.expect(
                    (res.get(section) or {}).get(resource) not in (None, ""),
                    where, f"resources.{section}.{resource} set",
                )
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        checks.expect(non_root and uid != 0, where, "runs as non-root (runAsNonRoot true, uid not 0)")
        checks.expect(sc.get("readOnlyRootFilesystem") is True, where, "readOnlyRootFilesystem true")
        checks.expect(sc.get("allowPrivilegeEscalation") is False, where, "allowPrivilegeEscalation false")
        checks.expect(sc.get("privileged") is not True, where, "not privileged")
        drops = [str(d).upper() for d in ((sc.get("capabilities") or {}).get("drop") or [])]
        checks.expect("ALL" in drops, where, "drops ALL capabilities")
        sleep = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds")
        if sleep is not None:
            checks.expect(grace > sleep, where, "terminationGracePeriodSeconds outlasts the preStop sleep",
                          f"grace {grace}s, preStop {sleep}s")


def replicas_and_hpa(doc: dict, hpas: list[dict]) -> tuple[int, dict | None]:
    replicas = (doc.get("spec") or {}).get("replicas", 1)
    for hpa in hpas:
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        if ref.get("kind") == doc["kind"] and ref.get("name") == doc["metadata"]["name"]:
            return max(replicas, hpa["spec"].get("minReplicas", 1)), hpa
    return replicas, None


def check_availability(docs: list[dict], checks: Checks) -> None:
    hpas = [d for d in docs if d.get("kind") == "HorizontalPodAutoscaler"]
    pdbs = [d for d in docs if d.get("kind") == "PodDisruptionBudget"]
    for doc in docs:
        if doc.get("kind") not in SCALABLE:
            continue
        replicas, _ = replicas_and_hpa(doc, hpas)
        if replicas <= 1:
            continue
        obj = name_of(doc)
        labels = pod_labels(doc)
        checks.expect(
            any(selects((p.get("spec") or {}).get("selector"), labels) for p in pdbs),
            obj, f"has a PodDisruptionBudget ({replicas} replicas)",
        )
        spec = pod_spec(doc) or {}
        spread = bool(((spec.get("affinity") or {}).get("podAntiAffinity"))
                      or spec.get("topologySpreadConstraints"))
        checks.expect(spread, obj, f"spreads its {replicas} replicas (podAntiAffinity or topologySpreadConstraints)")
    for doc in docs:
        if doc.get("kind") in SCALABLE and replicas_and_hpa(doc, hpas)[1] is not None:
            checks.expect("replicas" not in (doc.get("spec") or {}), name_of(doc),
                          "sets no replicas of its own (its HorizontalPodAutoscaler owns the count; "
                          "kubectl apply would reset it)")
    workloads = {(d.get("kind"), d["metadata"]["name"]) for d in docs if d.get("kind") in SCALABLE}
    for hpa in hpas:
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        checks.expect((ref.get("kind"), ref.get("name")) in workloads, name_of(hpa),
                      "scales a workload that exists", f"{ref.get('kind')}/{ref.get('name')}")
        spec = hpa.get("spec") or {}
        checks.expect(spec.get("minReplicas", 1) <= spec.get("maxReplicas", 0), name_of(hpa),
                      "minReplicas <= maxReplicas")
    for pdb in pdbs:
        sel = (pdb.get("spec") or {}).get("selector")
        checks.expect(any(selects(sel, pod_labels(d)) for d in docs if pod_spec(d) is not None),
                      name_of(pdb), "selects the pods of a workload")


def check_services(docs: list[dict], checks: Checks) -> None:
    for svc in (d for d in docs if d.get("kind") == "Service"):
        sel = (svc.get("spec") or {}).get("selector")
        if not sel:
            continue
        checks.expect(
            any(selects({"matchLabels": sel}, pod_labels(d)) for d in docs if pod_spec(d) is not None),
            name_of(svc), "selects the pods of a workload",
        )


def is_default_deny(policy: dict) -> bool:
    spec = policy.get("spec") or {}
    return (
        spec.get("podSelector") in ({}, None)
        and set(spec.get("policyTypes") or []) >= {"Ingress", "Egress"}
        and not spec.get("ingress")
        and not spec.get("egress")
    )


def check_network(docs: list[dict], checks: Checks) -> None:
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    checks.expect(any(is_default_deny(p) for p in policies), "NetworkPolicy",
                  "a default-deny policy (every pod, Ingress and Egress, no rules) exists")
    for doc in docs:
        if pod_spec(doc) is None:
            continue
        labels = pod_labels(doc)
        allowing = [p for p in policies if not is_default_deny(p)
                    and selects((p.get("spec") or {}).get("podSelector") or {}, labels)
                    and ((p["spec"].get("ingress")) or (p["spec"].get("egress")))
                    and (p["spec"].get("podSelector") or {}) != {}]
        checks.expect(bool(allowing), name_of(doc), "is selected by a NetworkPolicy that allows its own flows")


def config_values(docs: list[dict]) -> dict:
    values: dict = {}
    for doc in docs:
        if doc.get("kind") == "ConfigMap":
            values.update(doc.get("data") or {})
    return values


def check_upstreams(docs: list[dict], checks: Checks) -> None:
    """The gateway only routes to pods it has been told about."""
    config = config_values(docs)
    hpas = [d for d in docs if d.get("kind") == "HorizontalPodAutoscaler"]
    sets = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "StatefulSet"}
    services = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Service"}
    for var in UPSTREAM_VARS:
        raw = config.get(var)
        if not checks.expect(bool(raw), "ConfigMap", f"sets {var}"):
            continue
        hosts = []
        for url in raw.split(","):
            m = re.fullmatch(r"https?://([^/:]+)(?::\d+)?/?", url.strip())
            checks.expect(bool(m), "ConfigMap", f"{var} entries are base URLs", url)
            if m:
                hosts.append(m.group(1))
        pods = [re.fullmatch(r"(.+)-(\d+)\.([^.]+)", h) for h in hosts]
        if not all(pods):
            continue  # plain Service names: nothing pod-specific to check
        sts_name, svc_name = pods[0].group(1), pods[0].group(3)
        sts = sets.get(sts_name)
        if not checks.expect(sts is not None, "ConfigMap", f"{var} names pods of an existing StatefulSet", sts_name):
            continue
        most, hpa = replicas_and_hpa(sts, hpas)
        if hpa is not None:
            most = hpa["spec"]["maxReplicas"]
        most = max(most, sts["spec"].get("replicas", 1))
        wanted = [f"{sts_name}-{i}.{svc_name}" for i in range(most)]
        checks.expect(hosts[: len(wanted)] == wanted and len(hosts) >= most, "ConfigMap",
                      f"{var} lists every pod {name_of(sts)} can have", f"want {most} pods, got {len(hosts)}")
        checks.expect(sts["spec"].get("serviceName") == svc_name, name_of(sts),
                      f"serviceName is {svc_name}, the Service in {var}")
        svc = services.get(svc_name)
        ok = bool(svc) and svc["spec"].get("clusterIP") == "None" and svc["spec"].get("publishNotReadyAddresses") is True
        checks.expect(ok, f"Service/{svc_name}", "is headless and publishes not-ready addresses (the gateway health-checks pods itself)")


# What each binary cannot start without (docs/configuration.md): variables that must reach the
# container from `env` or from a ConfigMap it loads with `envFrom`.
REQUIRED_ENV = {
    "gateway": ["CALLS_API_UPSTREAMS", "SIGNALING_UPSTREAMS"],
    "calls-api": ["DATABASE_URL", "NATS_URL", "MEDIA_TOKEN_URL", "MEDIA_TOKEN_SERVICE_TOKEN"],
    "calls-api migrate": ["DATABASE_URL"],
    "signaling": ["NATS_URL"],
    "media-token serve": ["MEDIA_TOKEN_SERVICE_TOKENS"],
}
NEEDS_JWT = {"gateway", "calls-api", "signaling"}


def check_env(docs: list[dict], checks: Checks) -> None:
    """Every service gets its required variables and exactly one JWT key source."""
    maps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d.get("kind") == "ConfigMap"}
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        for c in spec.get("containers") or []:
            command = c.get("command") or []
            if not command or not str(command[0]).startswith("/usr/local/bin/"):
                continue
            binary = " ".join([str(command[0]).rsplit("/", 1)[1]] + [str(a) for a in command[1:]])
            where = f"{name_of(doc)} container {c.get('name')}"
            names = {e.get("name") for e in c.get("env") or []}
            for source in c.get("envFrom") or []:
                ref = (source.get("configMapRef") or {}).get("name")
                if ref is not None:
                    checks.expect(ref in maps, where, "loads a ConfigMap that exists", ref)
                    names |= set(maps.get(ref, {}))
            for var in REQUIRED_ENV.get(binary, []):
                checks.expect(var in names, where, f"gets {var} ({binary} needs it)")
            if binary in NEEDS_JWT:
                keys = names & {"JWT_SECRET", "JWT_PUBLIC_KEY_FILE", "JWT_JWKS_URL"}
                checks.expect(len(keys) == 1, where, "gets exactly one of JWT_SECRET, JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL",
                              ", ".join(sorted(keys)) or "none")
                if "JWT_JWKS_URL" in keys:
                    checks.expect("JWT_ISSUER" in names, where, "gets JWT_ISSUER with JWT_JWKS_URL (the service refuses to start without)")


def check_metrics_ports(docs: list[dict], checks: Checks) -> None:
    """Prometheus scrapes a declared port, and never one a Service exposes for the gateway: its
    /metrics names internal pods and belongs on the admin port only."""
    service_ports = {
        p.get("targetPort")
        for d in docs if d.get("kind") == "Service"
        and (d.get("spec") or {}).get("selector", {}).get("app.kubernetes.io/name") == "gateway"
        for p in (d.get("spec") or {}).get("ports") or []
    }
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        annotations = ((doc.get("spec") or {}).get("template", {}).get("metadata") or {}).get("annotations") or {}
        port = annotations.get("prometheus.io/port")
        if port is None:
            continue
        containers = spec.get("containers") or []
        declared = {p.get("containerPort"): p.get("name") for c in containers for p in c.get("ports") or []}
        checks.expect(int(port) in declared, name_of(doc), "is scraped on a declared container port", port)
        if pod_labels(doc).get("app.kubernetes.io/name") == "gateway":
            name = declared.get(int(port))
            checks.expect(name not in service_ports and int(port) not in service_ports, name_of(doc),
                          "exposes its metrics on a port no Service publishes (the admin port)", port)


def check_documents(docs: list[dict]) -> Checks:
    checks = Checks()
    docs = [d for d in docs if isinstance(d, dict) and d.get("kind")]
    for doc in docs:
        check_containers(doc, checks)
    check_availability(docs, checks)
    check_services(docs, checks)
    check_network(docs, checks)
    check_metrics_ports(docs, checks)
    check_upstreams(docs, checks)
    check_env(docs, checks)
    return checks


def check_compose(compose: dict) -> Checks:
    checks = Checks()
    services = compose.get("services") or {}
    checks.expect(bool(services), "compose", "defines services")
    for name, svc in services.items():
        obj = f"compose service {name}"
        ok, why = image_pinned(str(svc.get("image", "")))
        checks.expect(ok, obj, "image pinned (tag other than latest, or digest)", why)
        if name != "gateway":
            checks.expect(not svc.get("ports"), obj, "publishes no port (only the gateway does)")
        if str(svc.get("image", "")).startswith("calls-backend:"):
            checks.expect(svc.get("read_only") is True, obj, "read_only root filesystem")
            user = str(svc.get("user", "")).split(":")[0]
            checks.expect(user not in ("", "0", "root"), obj, "runs as non-root user")
            checks.expect("ALL" in (svc.get("cap_drop") or []), obj, "drops ALL capabilities")
            checks.expect("no-new-privileges:true" in (svc.get("security_opt") or []), obj, "no-new-privileges")
    checks.expect(bool((services.get("gateway") or {}).get("ports")), "compose service gateway", "publishes its port")
    for need in ("postgres", "nats", "migrate", "media-token", "gateway"):
        checks.expect(need in services, "compose", f"has the {need} service")
    for prefix in ("calls-api", "signaling"):
        count = sum(1 for n in services if n.startswith(prefix + "-"))
        checks.expect(count >= 2, "compose", f"runs at least two {prefix} replicas", str(count))
    return checks


def check_dockerfile(text: str) -> Checks:
    """Multi-stage, pinned base images, a non-root final stage."""
    checks = Checks()
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    args = {}
    for line in lines:
        m = re.match(r"ARG\s+([A-Za-z_][A-Za-z0-9_]*)=(\S+)", line)
        if m:
            args.setdefault(m.group(1), m.group(2))
    froms = [l.split()[1] for l in lines if l.upper().startswith("FROM ")]
    stages = {l.split()[3] for l in lines if l.upper().startswith("FROM ") and len(l.split()) >= 4}
    checks.expect(len(froms) >= 2, "Dockerfile", "is multi-stage", f"{len(froms)} stage(s)")
    for image in froms:
        resolved = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
        if resolved in stages:
            continue
        ok, why = image_pinned(resolved)
        checks.expect(ok, "Dockerfile", f"base image {resolved} pinned", why)
    final = len(lines) - 1 - next(i for i, l in enumerate(reversed(lines)) if l.upper().startswith("FROM "))
    users = [l.split()[1] for l in lines[final:] if l.upper().startswith("USER ")]
    checks.expect(bool(users) and users[-1].split(":")[0] not in ("0", "root"), "Dockerfile",
                  "final stage runs as a non-root USER", users[-1] if users else "no USER")
    checks.expect(any("cargo chef cook" in l for l in lines), "Dockerfile",
                  "builds the dependencies in their own cached step (cargo chef cook)")
    return checks


# --- self-tests: the checker must reject broken manifests -------------------------------------

def find(docs: list[dict], kind: str, name: str) -> dict:
    for d in docs:
        if d.get("kind") == kind and d["metadata"]["name"] == name:
            return d
    raise KeyError(f"{kind}/{name}")


def first_workload(docs: list[dict], kind: str) -> dict:
    for d in docs:
        if d.get("kind") == kind and (pod_spec(d) or {}).get("containers"):
            return d
    raise KeyError(kind)


def mutations(docs: list[dict]):
    """(description, expected failure substring, broken copy of docs)."""

    def broken(fn):
        copied = copy.deepcopy(docs)
        fn(copied)
        return copied

    dep = first_workload(docs, "Deployment")["metadata"]["name"]
    sts = first_workload(docs, "StatefulSet")["metadata"]["name"]

    def container(d, kind, name):
        return find(d, kind, name)["spec"]["template"]["spec"]["containers"][0]

    yield ("a container without a readiness probe", "has a readinessProbe",
           broken(lambda d: container(d, "Deployment", dep).pop("readinessProbe")))
    yield ("an image on :latest", "image pinned",
           broken(lambda d: container(d, "Deployment", dep).__setitem__("image", "calls-backend:latest")))
    yield ("an image without a tag", "image pinned",
           broken(lambda d: container(d, "StatefulSet", sts).__setitem__("image", "calls-backend")))
    yield ("privilege escalation allowed", "allowPrivilegeEscalation false",
           broken(lambda d: container(d, "StatefulSet", sts)["securityContext"].__setitem__("allowPrivilegeEscalation", True)))
    yield ("a writable root filesystem", "readOnlyRootFilesystem true",
           broken(lambda d: container(d, "Deployment", dep)["securityContext"].pop("readOnlyRootFilesystem")))

    def as_root(d):
        c = container(d, "Deployment", dep)
        c["securityContext"]["runAsNonRoot"] = False
        find(d, "Deployment", dep)["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False

    yield ("a container allowed to run as root", "runs as non-root", broken(as_root))
    yield ("a container without a memory limit", "resources.limits.memory set",
           broken(lambda d: container(d, "StatefulSet", sts)["resources"]["limits"].pop("memory")))

    def no_pdb(d):
        labels = pod_labels(find(d, "StatefulSet", sts))
        d[:] = [x for x in d if not (x.get("kind") == "PodDisruptionBudget"
                                     and selects(x["spec"].get("selector"), labels))]
        find(d, "StatefulSet", sts)["spec"]["replicas"] = 3

    yield ("three replicas without a PodDisruptionBudget", "has a PodDisruptionBudget", broken(no_pdb))

    hpa_targets = [((h.get("spec") or {}).get("scaleTargetRef") or {}) for h in docs
                   if h.get("kind") == "HorizontalPodAutoscaler"]
    if hpa_targets:
        target = hpa_targets[0]
        yield ("replicas on an autoscaled workload", "sets no replicas of its own",
               broken(lambda d: find(d, target["kind"], target["name"])["spec"].__setitem__("replicas", 3)))

    def no_deny(d):
        d[:] = [x for x in d if not (x.get("kind") == "NetworkPolicy" and is_default_deny(x))]

    yield ("no default-deny NetworkPolicy", "default-deny", broken(no_deny))

    def short_upstreams(d):
        for x in d:
            if x.get("kind") == "ConfigMap" and "SIGNALING_UPSTREAMS" in (x.get("data") or {}):
                x["data"]["SIGNALING_UPSTREAMS"] = x["data"]["SIGNALING_UPSTREAMS"].split(",")[0]
        for x in d:
            if x.get("kind") == "StatefulSet" and x["metadata"]["name"] == "signaling":
                x["spec"]["replicas"] = 2

    yield ("gateway upstreams missing signaling pods", "SIGNALING_UPSTREAMS lists every pod", broken(short_upstreams))

    def long_prestop(d):
        c = container(d, "Deployment", dep)
        c.setdefault("lifecycle", {})["preStop"] = {"sleep": {"seconds": 120}}

    yield ("a preStop sleep longer than the grace period", "outlasts the preStop sleep", broken(long_prestop))

    def two_jwt_keys(d):
        c = container(d, "Deployment", "gateway")
        c["env"] += [{"name": "JWT_PUBLIC_KEY_FILE", "value": "/etc/calls/jwt/public.pem"},
                     {"name": "JWT_SECRET", "value": "x" * 32}]

    yield ("a gateway given both JWT key sources", "exactly one of JWT_SECRET", broken(two_jwt_keys))

    def no_nats(d):
        for x in d:
            if x.get("kind") == "ConfigMap":
                (x.get("data") or {}).pop("NATS_URL", None)
        c = container(d, "StatefulSet", "signaling")
        c["env"] = [e for e in c.get("env") or [] if e.get("name") != "NATS_URL"]

    yield ("signaling without NATS_URL", "gets NATS_URL", broken(no_nats))


def self_test(docs: list[dict], label: str, report: Checks) -> None:
    for description, expected, broken in mutations(docs):
        found = [f for f in check_documents(broken).failures if expected in f]
        report.expect(bool(found), f"self-test on {label}", f"rejects {description}",
                      "the checker did not report it")


def compose_self_test(compose: dict, report: Checks) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["signaling-1"]["ports"] = ["8082:8082"]
    found = [f for f in check_compose(broken).failures if "publishes no port" in f]
    report.expect(bool(found), "self-test on compose", "rejects a published signaling port")
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["read_only"] = False
    found = [f for f in check_compose(broken).failures if "read_only" in f]
    report.expect(bool(found), "self-test on compose", "rejects a writable gateway")


def dockerfile_self_test(text: str, report: Checks) -> None:
    root = re.sub(r"(?m)^USER .*$", "USER root", text)
    report.expect(any("non-root USER" in f for f in check_dockerfile(root).failures),
                  "self-test on Dockerfile", "rejects a final stage running as root")
    latest = re.sub(r"(?m)^ARG RUNTIME_IMAGE=.*$", "ARG RUNTIME_IMAGE=debian:latest", text)
    report.expect(any("pinned" in f for f in check_dockerfile(latest).failures),
                  "self-test on Dockerfile", "rejects a base image on :latest")


def main(argv: list[str]) -> int:
    dockerfile_path = None
    compose_path = None
    files = []
    args = iter(argv)
    for arg in args:
        if arg == "--compose":
            compose_path = next(args, None)
        elif arg == "--dockerfile":
            dockerfile_path = next(args, None)
        else:
            files.append(arg)
    if not files:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    total = Checks()

    def merge(result: Checks, label: str) -> None:
        total.passed += result.passed
        total.failures += [f"[{label}] {f}" for f in result.failures]
        print(f"{label}: {result.passed} passed, {len(result.failures)} failed")

    for path in files:
        label = Path(path).stem
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
        selftest = Checks()
        self_test(docs, label, selftest)
        merge(selftest, f"{label} (self-test)")
        merge(check_documents(docs), label)
    if compose_path:
        compose = yaml.safe_load(Path(compose_path).read_text())
        selftest = Checks()
        compose_self_test(compose, selftest)
        merge(selftest, "compose (self-test)")
        merge(check_compose(compose), "compose")
    if dockerfile_path:
        text = Path(dockerfile_path).read_text()
        selftest = Checks()
        dockerfile_self_test(text, selftest)
        merge(selftest, "Dockerfile (self-test)")
        merge(check_dockerfile(text), "Dockerfile")
    for failure in total.failures:
        print(f"FAIL {failure}")
    print(f"{total.passed} passed, {len(total.failures)} failed")
    return 1 if total.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

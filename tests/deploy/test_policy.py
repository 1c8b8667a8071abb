#!/usr/bin/env python3
"""Policy test of the rendered Kubernetes manifests and the compose file.

    python3 tests/deploy/test_policy.py RENDERED.yaml... [--compose COMPOSE]... [--dockerfile DOCKERFILE] [--list-mutations]

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
- every service (gateway, calls-api, signaling, media-token, notifier) runs, has a
  PodDisruptionBudget, and has a HorizontalPodAutoscaler wherever the overlay autoscales;
- a default-deny NetworkPolicy exists (ingress and egress), and every pod is selected by a
  policy that allows it something;
- the flows the design needs get through the NetworkPolicies, evaluated as Kubernetes does
  (egress of the source and ingress of the destination): the gateway reaches every pod of its
  upstream lists on their port, Prometheus (a namespace labelled calls-backend/monitoring)
  reaches every scraped port; notifier admits only those two and labelled internal clients, reaches any address on TCP 443
  (APNs, FCM, webhooks) and nothing else outside but its datastores, which are every Postgres
  and NATS calls-api reaches;
- the gateway's upstream lists name every pod a StatefulSet can have (up to its autoscaler's
  maxReplicas) through its headless Service, which publishes not-ready addresses;
- terminationGracePeriodSeconds outlasts each container's preStop sleep;
- each service gets the variables it cannot start without, and exactly one JWT key source;
  notifier's push key files (APNS_KEY_FILE, FCM_SERVICE_ACCOUNT_FILE) are files of mounted
  Secrets its user can read and others cannot, and APNs' key file, key id and team id come
  together (notifier refuses one without the others);
- the compose file: the services run read-only, as non-root, without capabilities; only the
  gateway publishes a port; images are pinned; two replicas of each scaled service, all named
  in the gateway's upstream lists; push key files are mounted secrets;
- the Dockerfile: multi-stage with a cached dependency step, pinned base images, a non-root
  final stage holding every binary the manifests run.

Before the real manifests, the checker is run on deliberately broken copies to show that it
rejects them (`--list-mutations` prints them). Prints one line per failure naming the object and the rule, then
`N passed, M failed`; exits 1 if anything failed. Needs PyYAML.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import sys
from pathlib import Path

import yaml

POD_WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}
SCALABLE = {"Deployment", "StatefulSet"}
UPSTREAM_VARS = ("CALLS_API_UPSTREAMS", "SIGNALING_UPSTREAMS", "NOTIFIER_UPSTREAMS")
# The services of the base and their kinds; every binary the image must hold.
SERVICES = {
    "gateway": "Deployment",
    "calls-api": "StatefulSet",
    "signaling": "StatefulSet",
    "media-token": "Deployment",
    "notifier": "StatefulSet",
}
BINARIES = ("gateway", "calls-api", "signaling", "media-token", "notifier", "calls-backend")


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


def check_services_present(docs: list[dict], checks: Checks) -> None:
    """Every service runs, with a disruption budget and, where the overlay autoscales, an autoscaler."""
    hpas = [d for d in docs if d.get("kind") == "HorizontalPodAutoscaler"]
    pdbs = [d for d in docs if d.get("kind") == "PodDisruptionBudget"]
    for name, kind in SERVICES.items():
        doc = next((d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name), None)
        if not checks.expect(doc is not None, "overlay", f"runs {name} ({kind})"):
            continue
        labels = pod_labels(doc)
        checks.expect(any(selects((p.get("spec") or {}).get("selector"), labels) for p in pdbs),
                      name_of(doc), "has a PodDisruptionBudget")
        if hpas:
            checks.expect(replicas_and_hpa(doc, hpas)[1] is not None, name_of(doc),
                          "has a HorizontalPodAutoscaler (the overlay autoscales its services)")


# --- NetworkPolicy evaluation -----------------------------------------------------------------
#
# An endpoint is a pod (its namespace's labels, its own labels, whether it is in the namespace
# the manifests deploy to) or an address outside the cluster. The rules are Kubernetes': a pod
# selected by no policy of a direction is open in that direction; once selected, a connection
# needs a rule of one of those policies that admits the peer and the port; a connection needs
# the source's egress and the destination's ingress. Only sources and destinations in the
# deployed namespace have policies here (Prometheus' namespace is someone else's).

MONITORING_NS = {"kubernetes.io/metadata.name": "monitoring", "calls-backend/monitoring": "true"}
OTHER_NS = {"kubernetes.io/metadata.name": "elsewhere"}
# Outside addresses standing for the push services and a webhook endpoint (Apple's 17.0.0.0/8,
# a Google front end, a documentation address), and anything else.
OUTSIDE = {
    "APNs (api.push.apple.com)": "17.188.143.34",
    "FCM (fcm.googleapis.com)": "142.250.74.42",
    "a webhook endpoint": "203.0.113.7",
}


def pod(labels: dict, ns_labels: dict, inside: bool = True) -> dict:
    return {"pod": True, "labels": labels, "ns": ns_labels, "inside": inside}


def address(ip: str) -> dict:
    return {"pod": False, "ip": ip, "inside": False}


def describe(endpoint: dict) -> str:
    if not endpoint["pod"]:
        return endpoint["ip"]
    labels = endpoint["labels"]
    return labels.get("app.kubernetes.io/name") or ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def namespace_labels(docs: list[dict]) -> dict:
    for d in docs:
        if d.get("kind") == "Namespace":
            return {"kubernetes.io/metadata.name": d["metadata"]["name"], **(d["metadata"].get("labels") or {})}
    return {"kubernetes.io/metadata.name": "default"}


def peer_admits(peer: dict, endpoint: dict) -> bool:
    if "ipBlock" in peer:
        if endpoint["pod"]:
            return False  # pod addresses in ipBlocks are implementation-defined; the manifests never rely on them
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(endpoint["ip"])
        if ip not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(ip in ipaddress.ip_network(e) for e in block.get("except") or [])
    if not endpoint["pod"]:
        return False
    ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
    if ns_sel is None and not endpoint["inside"]:
        return False
    if ns_sel is not None and not selects(ns_sel, endpoint["ns"]):
        return False
    return pod_sel is None or selects(pod_sel, endpoint["labels"])


def ports_admit(ports: list | None, port: int) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != "TCP":
            continue
        first, last = p.get("port"), p.get("endPort")
        if first is None or first == port or (last is not None and isinstance(first, int) and first <= port <= last):
            return True
    return False


def policy_allows(docs: list[dict], subject: dict, direction: str, peer: dict, port: int) -> bool:
    """Whether the policies selecting `subject` (a pod inside) let it talk to `peer` on `port`."""
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    selecting = []
    for p in docs:
        if p.get("kind") != "NetworkPolicy":
            continue
        spec = p.get("spec") or {}
        types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if spec.get("egress") else []))
        if direction in types and selects(spec.get("podSelector") or {}, subject["labels"]):
            selecting.append(spec)
    if not selecting:
        return True
    for spec in selecting:
        for rule in spec.get(key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(peer_admits(x, peer) for x in peers)) and ports_admit(rule.get("ports"), port):
                return True
    return False


def reachable(docs: list[dict], source: dict, dest: dict, port: int) -> bool:
    if source["inside"] and not policy_allows(docs, source, "Egress", dest, port):
        return False
    return not dest["inside"] or policy_allows(docs, dest, "Ingress", source, port)


def check_flows(docs: list[dict], checks: Checks) -> None:
    """The connections the design needs are allowed, and notifier's stay as narrow as they can."""
    ns = namespace_labels(docs)
    workloads = {d["metadata"]["name"]: d for d in docs if d.get("kind") in SCALABLE}
    config = config_values(docs)
    gateway = workloads.get("gateway")
    prometheus = pod({"app.kubernetes.io/name": "prometheus"}, MONITORING_NS, inside=False)

    # The gateway reaches every pod it is told about, on the port of its URL.
    for var in UPSTREAM_VARS:
        for url in (config.get(var) or "").split(","):
            m = re.fullmatch(r"https?://([^/:.]+)-\d+\.[^/:]+:(\d+)/?", url.strip())
            if not m or gateway is None or m.group(1) not in workloads:
                continue
            target = workloads[m.group(1)]
            ok = reachable(docs, pod(pod_labels(gateway), ns), pod(pod_labels(target), ns), int(m.group(2)))
            checks.expect(ok, name_of(target), f"gateway reaches {m.group(1)} on {m.group(2)} ({var})")
            break

    # Prometheus reaches every port it is told to scrape.
    for doc in docs:
        annotations = ((doc.get("spec") or {}).get("template", {}).get("metadata") or {}).get("annotations") or {}
        port = annotations.get("prometheus.io/port")
        if pod_spec(doc) is None or port is None:
            continue
        checks.expect(reachable(docs, prometheus, pod(pod_labels(doc), ns), int(port)), name_of(doc),
                      f"Prometheus reaches its metrics port {port} (a namespace labelled calls-backend/monitoring)")

    notifier, calls_api = workloads.get("notifier"), workloads.get("calls-api")
    if notifier is None:
        return
    me = pod(pod_labels(notifier), ns)
    obj = name_of(notifier)
    port = int(str(config.get("NOTIFIER_LISTEN", ":8083")).rsplit(":", 1)[1])
    for intruder in (pod({"app.kubernetes.io/name": "debug-shell"}, ns),
                     pod({"app.kubernetes.io/name": "debug-shell"}, OTHER_NS, inside=False)):
        where = "its namespace" if intruder["inside"] else "another namespace"
        checks.expect(not reachable(docs, intruder, me, port), obj,
                      f"admits no other pod than the gateway, Prometheus and labelled internal clients on {port}", f"a pod of {where} got in")
    for what, ip in OUTSIDE.items():
        checks.expect(reachable(docs, me, address(ip), 443), obj, f"reaches {what} on TCP 443")
    # Outside, nothing but HTTPS and the datastores' ports.
    for other in (22, 25, 80, 8080):
        checks.expect(not reachable(docs, me, address(OUTSIDE["a webhook endpoint"]), other), obj,
                      f"reaches nothing outside on port {other} (only 443 and its datastores)")
    if calls_api is None:
        return
    # Its datastores are calls-api's: every Postgres and NATS calls-api may reach (pods of the
    # manifests, pods that policies name such as CloudNativePG's, or outside addresses).
    candidates = [pod(pod_labels(d), ns) for d in docs if pod_spec(d) is not None]
    candidates += [pod(dict(((p.get("spec") or {}).get("podSelector") or {}).get("matchLabels") or {}), ns)
                   for p in docs if p.get("kind") == "NetworkPolicy"
                   and ((p.get("spec") or {}).get("podSelector") or {}).get("matchLabels")]
    candidates += [address(OUTSIDE["a webhook endpoint"]), address("10.20.30.40")]
    api = pod(pod_labels(calls_api), ns)
    for store_port, store in ((5432, "Postgres"), (4222, "NATS")):
        stores = [c for c in candidates if reachable(docs, api, c, store_port)]
        checks.expect(bool(stores), name_of(calls_api), f"reaches a {store} on {store_port}")
        for dest in stores:
            checks.expect(reachable(docs, me, dest, store_port), obj,
                          f"reaches {store} at {describe(dest)} on {store_port}, as calls-api does")


def check_push_credentials(docs: list[dict], checks: Checks) -> None:
    """notifier's key files are Secret files only its user reads; APNs' settings come together."""
    maps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d.get("kind") == "ConfigMap"}
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        for c in spec.get("containers") or []:
            if str((c.get("command") or [""])[0]).rsplit("/", 1)[-1] != "notifier":
                continue
            where = f"{name_of(doc)} container {c.get('name')}"
            values = {}
            for source in c.get("envFrom") or []:
                values.update(maps.get((source.get("configMapRef") or {}).get("name"), {}))
            values.update({e.get("name"): e.get("value") for e in c.get("env") or []})
            apns = ("APNS_KEY_FILE", "APNS_KEY_ID", "APNS_TEAM_ID")
            present = [v for v in apns if v in values]
            checks.expect(len(present) in (0, len(apns)), where,
                          "gets APNS_KEY_FILE, APNS_KEY_ID and APNS_TEAM_ID together (notifier refuses one without the others)",
                          ", ".join(present))
            if "APNS_ENVIRONMENT" in values:
                checks.expect(values["APNS_ENVIRONMENT"] in ("production", "sandbox"), where,
                              "APNS_ENVIRONMENT is production or sandbox", str(values["APNS_ENVIRONMENT"]))
            volumes = {v.get("name"): v for v in spec.get("volumes") or []}
            pod_sc = spec.get("securityContext") or {}
            for var in ("APNS_KEY_FILE", "FCM_SERVICE_ACCOUNT_FILE"):
                path = values.get(var)
                if path is None:
                    continue
                mount = next((m for m in c.get("volumeMounts") or []
                              if str(path).startswith(m.get("mountPath", "").rstrip("/") + "/")), None)
                secret = (volumes.get(mount.get("name")) or {}).get("secret") if mount else None
                items = (secret or {}).get("items")
                inside = str(path)[len(mount["mountPath"].rstrip("/")) + 1:] if mount else ""
                ok = bool(secret) and mount.get("readOnly") is True and (not items or any(i.get("path") == inside for i in items))
                checks.expect(ok, where, f"{var} is a file of a Secret mounted read-only", str(path))
                if secret:
                    mode = next((i.get("mode") for i in items or [] if i.get("path") == inside), None)
                    mode = mode if mode is not None else secret.get("defaultMode", 0o644)
                    user_reads = pod_sc.get("fsGroup") is not None and mode & 0o040
                    checks.expect(bool(user_reads) and not mode & 0o007, where,
                                  f"{var} is readable by the service (group fsGroup) and by no one else",
                                  f"mode {mode:o}, fsGroup {pod_sc.get('fsGroup')}")


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
    # NOTIFIER_UPSTREAMS is optional to the binary (devices answer 503 without it), not here.
    "gateway": ["CALLS_API_UPSTREAMS", "SIGNALING_UPSTREAMS", "NOTIFIER_UPSTREAMS"],
    "calls-api": ["DATABASE_URL", "NATS_URL", "MEDIA_TOKEN_URL", "MEDIA_TOKEN_SERVICE_TOKEN"],
    "calls-api migrate": ["DATABASE_URL"],
    "signaling": ["NATS_URL"],
    "media-token serve": ["MEDIA_TOKEN_SERVICE_TOKENS"],
    "notifier": ["DATABASE_URL", "NATS_URL"],
}
NEEDS_JWT = {"gateway", "calls-api", "signaling", "notifier"}


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
    check_services_present(docs, checks)
    check_flows(docs, checks)
    check_push_credentials(docs, checks)
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
    for prefix in ("calls-api", "signaling", "notifier"):
        count = sum(1 for n in services if n.startswith(prefix + "-"))
        checks.expect(count >= 2, "compose", f"runs at least two {prefix} replicas", str(count))
    # The gateway is told about every replica, and only about services that exist.
    gateway_env = (services.get("gateway") or {}).get("environment") or {}
    for var, prefix in zip(UPSTREAM_VARS, ("calls-api", "signaling", "notifier")):
        hosts = [re.sub(r"^https?://|[:/].*$", "", u.strip()) for u in str(gateway_env.get(var) or "").split(",") if u.strip()]
        replicas = sorted(n for n in services if n.startswith(prefix + "-"))
        checks.expect(sorted(hosts) == replicas, "compose service gateway", f"{var} names every {prefix} service",
                      f"{', '.join(hosts) or 'unset'} for {', '.join(replicas)}")
    for name, svc in services.items():
        command = " ".join(str(c).rsplit("/", 1)[-1] for c in (svc.get("command") or [])[:1])
        if command != "notifier":
            continue
        obj = f"compose service {name}"
        env = svc.get("environment") or {}
        for var in ("DATABASE_URL", "NATS_URL"):
            checks.expect(bool(env.get(var)), obj, f"gets {var} (notifier needs it)")
        keys = set(env) & {"JWT_SECRET", "JWT_PUBLIC_KEY_FILE", "JWT_JWKS_URL"}
        checks.expect(len(keys) == 1, obj, "gets exactly one of JWT_SECRET, JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL")
        apns = [v for v in ("APNS_KEY_FILE", "APNS_KEY_ID", "APNS_TEAM_ID") if env.get(v)]
        checks.expect(len(apns) in (0, 3), obj, "gets APNS_KEY_FILE, APNS_KEY_ID and APNS_TEAM_ID together", ", ".join(apns))
        targets = {s.get("target") or f"/run/secrets/{s.get('source')}" for s in svc.get("secrets") or []}
        for var in ("APNS_KEY_FILE", "FCM_SERVICE_ACCOUNT_FILE"):
            if env.get(var):
                checks.expect(env[var] in targets, obj, f"{var} is a secret mounted in the service", env[var])
    return checks


def check_dockerfile(text: str, binaries: set[str] | frozenset[str] = frozenset()) -> Checks:
    """Multi-stage, pinned base images, a non-root final stage, every binary `binaries` names
    (the services', and those the manifests run) built into it."""
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
    copied = set(re.findall(r"target/release/([A-Za-z0-9_-]+)", text))
    for binary in sorted(set(BINARIES) | set(binaries)):
        checks.expect(binary in copied, "Dockerfile", f"the image holds the {binary} binary (target/release/{binary})")
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
    """(description, expected failure: a substring, or a tuple of substrings all in one failure
    line, broken copy of docs)."""

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

    # --- notifier: the same rules as the other services, shown to bite on it -----------------
    if not any(d.get("kind") == "StatefulSet" and d["metadata"]["name"] == "notifier" for d in docs):
        return
    notifier = "StatefulSet/", "/notifier"

    def n_container(d):
        return container(d, "StatefulSet", "notifier")

    def n_pod(d):
        return find(d, "StatefulSet", "notifier")["spec"]["template"]["spec"]

    yield ("notifier without a readiness probe", (*notifier, "has a readinessProbe"),
           broken(lambda d: n_container(d).pop("readinessProbe")))
    yield ("notifier without a liveness probe", (*notifier, "has a livenessProbe"),
           broken(lambda d: n_container(d).pop("livenessProbe")))
    yield ("notifier's readiness probe on an undeclared port", (*notifier, "readinessProbe targets a declared"),
           broken(lambda d: n_container(d)["readinessProbe"]["httpGet"].__setitem__("port", 9999)))
    yield ("notifier without a memory limit", (*notifier, "resources.limits.memory set"),
           broken(lambda d: n_container(d)["resources"]["limits"].pop("memory")))
    yield ("notifier without a CPU request", (*notifier, "resources.requests.cpu set"),
           broken(lambda d: n_container(d)["resources"]["requests"].pop("cpu")))

    def n_root(d):
        n_container(d)["securityContext"]["runAsUser"] = 0

    yield ("notifier running as uid 0", (*notifier, "runs as non-root"), broken(n_root))
    yield ("notifier with a writable root filesystem", (*notifier, "readOnlyRootFilesystem true"),
           broken(lambda d: n_container(d)["securityContext"].__setitem__("readOnlyRootFilesystem", False)))
    yield ("notifier keeping its capabilities", (*notifier, "drops ALL capabilities"),
           broken(lambda d: n_container(d)["securityContext"].pop("capabilities")))
    yield ("notifier on :latest", (*notifier, "image pinned"),
           broken(lambda d: n_container(d).__setitem__("image", "calls-backend:latest")))

    def n_no_pdb(d):
        labels = pod_labels(find(d, "StatefulSet", "notifier"))
        d[:] = [x for x in d if not (x.get("kind") == "PodDisruptionBudget" and selects(x["spec"].get("selector"), labels))]

    yield ("notifier without a PodDisruptionBudget", (*notifier, "has a PodDisruptionBudget"), broken(n_no_pdb))
    yield ("no notifier at all", "runs notifier",
           broken(lambda d: d.__setitem__(slice(None), [x for x in d if not (x.get("kind") == "StatefulSet" and x["metadata"]["name"] == "notifier")])))
    if any(h.get("kind") == "HorizontalPodAutoscaler" for h in docs):
        yield ("notifier without its HorizontalPodAutoscaler", (*notifier, "has a HorizontalPodAutoscaler"),
               broken(lambda d: d.__setitem__(slice(None), [x for x in d if not (x.get("kind") == "HorizontalPodAutoscaler" and x["metadata"]["name"] == "notifier")])))
        yield ("replicas on the autoscaled notifier", (*notifier, "sets no replicas of its own"),
               broken(lambda d: find(d, "StatefulSet", "notifier")["spec"].__setitem__("replicas", 3)))

        def n_no_spread(d):
            spec = n_pod(d)
            spec.pop("affinity", None)
            spec.pop("topologySpreadConstraints", None)

        if n_pod(docs).get("affinity") or n_pod(docs).get("topologySpreadConstraints"):
            yield ("notifier's replicas not spread", (*notifier, "spreads its"), broken(n_no_spread))

    def short_notifier(d):
        for x in d:
            if x.get("kind") == "ConfigMap" and "NOTIFIER_UPSTREAMS" in (x.get("data") or {}):
                x["data"]["NOTIFIER_UPSTREAMS"] = x["data"]["NOTIFIER_UPSTREAMS"].split(",")[0]
        find(d, "StatefulSet", "notifier")["spec"]["replicas"] = 2

    yield ("gateway upstreams missing notifier pods", "NOTIFIER_UPSTREAMS lists every pod", broken(short_notifier))

    def no_notifier_upstreams(d):
        for x in d:
            if x.get("kind") == "ConfigMap":
                (x.get("data") or {}).pop("NOTIFIER_UPSTREAMS", None)

    yield ("a gateway without NOTIFIER_UPSTREAMS", ("gateway", "gets NOTIFIER_UPSTREAMS"), broken(no_notifier_upstreams))

    def n_no_database(d):
        c = n_container(d)
        c["env"] = [e for e in c.get("env") or [] if e.get("name") != "DATABASE_URL"]

    yield ("notifier without DATABASE_URL", (*notifier, "gets DATABASE_URL"), broken(n_no_database))

    def n_two_jwt(d):
        n_container(d)["env"] += [{"name": "JWT_JWKS_URL", "value": "https://example.com/jwks.json"},
                                  {"name": "JWT_SECRET", "value": "x" * 32}]

    yield ("notifier given two JWT key sources", (*notifier, "exactly one of JWT_SECRET"), broken(n_two_jwt))

    # Its NetworkPolicies.
    def policies_of(d, name):
        labels = pod_labels(find(d, *(("Deployment", name) if name == "gateway" else ("StatefulSet", name))))
        return [x for x in d if x.get("kind") == "NetworkPolicy"
                and (x["spec"].get("podSelector") or {}) != {} and selects(x["spec"]["podSelector"], labels)]

    def cut_egress(d, name, port):
        """`name` loses every egress rule for `port` (and its place in shared policies)."""
        for x in policies_of(d, name):
            sel = x["spec"]["podSelector"]
            for expr in sel.get("matchExpressions") or []:
                if expr.get("operator") == "In" and name in (expr.get("values") or []):
                    expr["values"] = [v for v in expr["values"] if v != name]
            if (sel.get("matchLabels") or {}).get("app.kubernetes.io/name") == name:
                x["spec"]["egress"] = [r for r in x["spec"].get("egress") or []
                                       if not any(p.get("port") == port for p in r.get("ports") or [])]

    yield ("a gateway that may not connect to notifier", (*notifier, "gateway reaches notifier"),
           broken(lambda d: cut_egress(d, "gateway", 8083)))

    def n_ingress(d, rules):
        for x in policies_of(d, "notifier"):
            if x["spec"].get("ingress"):
                x["spec"]["ingress"] = rules(x["spec"]["ingress"])

    def only_monitoring(rules):
        for r in rules:
            r["from"] = [p for p in r.get("from") or [] if "namespaceSelector" in p]
        return rules

    yield ("notifier closed to the gateway", (*notifier, "gateway reaches notifier"),
           broken(lambda d: n_ingress(d, only_monitoring)))

    def only_gateway(rules):
        for r in rules:
            r["from"] = [p for p in r.get("from") or [] if "namespaceSelector" not in p]
        return rules

    yield ("notifier closed to Prometheus", (*notifier, "Prometheus reaches its metrics port"),
           broken(lambda d: n_ingress(d, only_gateway)))
    yield ("notifier open to every pod", (*notifier, "admits no other pod"),
           broken(lambda d: n_ingress(d, lambda rules: [{"ports": [{"protocol": "TCP", "port": 8083}]}])))
    yield ("notifier without egress on 443", (*notifier, "reaches APNs"), broken(lambda d: cut_egress(d, "notifier", 443)))
    yield ("notifier allowed out on every port", (*notifier, "reaches nothing outside on port 80"),
           broken(lambda d: policies_of(d, "notifier")[0]["spec"].setdefault("egress", []).append({})))
    yield ("notifier cut off from Postgres", (*notifier, "on 5432, as calls-api does"),
           broken(lambda d: cut_egress(d, "notifier", 5432)))
    yield ("notifier cut off from NATS", (*notifier, "on 4222, as calls-api does"),
           broken(lambda d: cut_egress(d, "notifier", 4222)))

    # Push credentials.
    def apns_ids_without_key(d):
        c = n_container(d)
        c["env"] = [e for e in c.get("env") or [] if e.get("name") != "APNS_KEY_FILE"]
        for x in d:
            if x.get("kind") == "ConfigMap":
                x.setdefault("data", {}).update({"APNS_KEY_ID": "ABC123DEFG", "APNS_TEAM_ID": "DEF123GHIJ"})

    yield ("APNs ids without the key file", (*notifier, "APNS_TEAM_ID together"), broken(apns_ids_without_key))
    yield ("an APNS_ENVIRONMENT notifier refuses", (*notifier, "APNS_ENVIRONMENT is production or sandbox"),
           broken(lambda d: n_container(d)["env"].append({"name": "APNS_ENVIRONMENT", "value": "development"})))
    values = {e.get("name") for e in n_container(docs).get("env") or []}
    for var in ("APNS_KEY_FILE", "FCM_SERVICE_ACCOUNT_FILE"):
        if var not in values:
            continue

        def unmounted(d, var=var):
            path = next(e["value"] for e in n_container(d)["env"] if e.get("name") == var)
            c = n_container(d)
            c["volumeMounts"] = [m for m in c["volumeMounts"] if not path.startswith(m["mountPath"].rstrip("/") + "/")]

        def world_readable(d, var=var):
            path = next(e["value"] for e in n_container(d)["env"] if e.get("name") == var)
            mount = next(m for m in n_container(d)["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/"))
            volume = next(v for v in n_pod(d)["volumes"] if v["name"] == mount["name"])
            volume["secret"]["defaultMode"] = 0o644

        yield (f"{var} not mounted", (*notifier, f"{var} is a file of a Secret mounted read-only"), broken(unmounted))
        yield (f"{var} readable by everyone", (*notifier, f"{var} is readable by the service"), broken(world_readable))
        yield (f"{var} unreadable without fsGroup", (*notifier, f"{var} is readable by the service"),
               broken(lambda d: n_pod(d)["securityContext"].pop("fsGroup")))


def reports(failures: list[str], expected: str | tuple[str, ...]) -> bool:
    wanted = (expected,) if isinstance(expected, str) else expected
    return any(all(w in f for w in wanted) for f in failures)


def self_test(docs: list[dict], label: str, report: Checks) -> None:
    for description, expected, broken in mutations(docs):
        found = reports(check_documents(broken).failures, expected)
        report.expect(bool(found), f"self-test on {label}", f"rejects {description}",
                      "the checker did not report it")


def compose_mutations(compose: dict):
    """(description, expected failure, broken copy of the compose file), as for the manifests."""

    def broken(fn):
        copied = copy.deepcopy(compose)
        fn(copied["services"])
        return copied

    yield ("a published signaling port", "publishes no port",
           broken(lambda s: s["signaling-1"].__setitem__("ports", ["8082:8082"])))
    yield ("a writable gateway", "read_only", broken(lambda s: s["gateway"].__setitem__("read_only", False)))
    yield ("a notifier running as root", ("notifier-1", "runs as non-root"),
           broken(lambda s: s["notifier-1"].__setitem__("user", "0:0")))
    yield ("a published notifier port", ("notifier-2", "publishes no port"),
           broken(lambda s: s["notifier-2"].__setitem__("ports", ["8083:8083"])))
    yield ("one notifier", "runs at least two notifier replicas", broken(lambda s: s.pop("notifier-2")))

    def forgotten(s):
        env = s["gateway"]["environment"]
        env["NOTIFIER_UPSTREAMS"] = env["NOTIFIER_UPSTREAMS"].split(",")[0]

    yield ("a notifier the gateway does not know", "NOTIFIER_UPSTREAMS names every notifier service", broken(forgotten))
    yield ("a notifier without NATS_URL", ("notifier-1", "gets NATS_URL"),
           broken(lambda s: s["notifier-1"]["environment"].pop("NATS_URL")))
    if (compose["services"]["notifier-1"].get("environment") or {}).get("APNS_KEY_FILE"):
        yield ("an APNs key that is not a mounted secret", ("notifier-1", "APNS_KEY_FILE is a secret"),
               broken(lambda s: s["notifier-1"].__setitem__("secrets", [])))
        yield ("APNs without its team id", ("notifier-2", "together"),
               broken(lambda s: s["notifier-2"]["environment"].pop("APNS_TEAM_ID")))


def compose_self_test(compose: dict, label: str, report: Checks) -> None:
    for description, expected, broken in compose_mutations(compose):
        report.expect(reports(check_compose(broken).failures, expected), f"self-test on {label}",
                      f"rejects {description}", "the checker did not report it")


def dockerfile_self_test(text: str, report: Checks) -> None:
    root = re.sub(r"(?m)^USER .*$", "USER root", text)
    report.expect(any("non-root USER" in f for f in check_dockerfile(root).failures),
                  "self-test on Dockerfile", "rejects a final stage running as root")
    latest = re.sub(r"(?m)^ARG RUNTIME_IMAGE=.*$", "ARG RUNTIME_IMAGE=debian:latest", text)
    report.expect(any("pinned" in f for f in check_dockerfile(latest).failures),
                  "self-test on Dockerfile", "rejects a base image on :latest")
    without = text.replace("target/release/notifier", "")
    report.expect(any("notifier binary" in f for f in check_dockerfile(without).failures),
                  "self-test on Dockerfile", "rejects an image without the notifier binary")


def main(argv: list[str]) -> int:
    dockerfile_path = None
    compose_paths = []
    files = []
    list_only = False
    args = iter(argv)
    for arg in args:
        if arg == "--compose":
            compose_paths.append(next(args, None))
        elif arg == "--dockerfile":
            dockerfile_path = next(args, None)
        elif arg == "--list-mutations":
            list_only = True
        else:
            files.append(arg)
    if not files:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    total = Checks()
    binaries: set[str] = set()

    def merge(result: Checks, label: str) -> None:
        total.passed += result.passed
        total.failures += [f"[{label}] {f}" for f in result.failures]
        print(f"{label}: {result.passed} passed, {len(result.failures)} failed")

    for path in files:
        label = Path(path).stem
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
        if list_only:
            for description, expected, _ in mutations(docs):
                print(f"{label}: rejects {description} -> {expected}")
            continue
        for doc in docs:
            for c in (pod_spec(doc) or {}).get("containers") or []:
                command = str((c.get("command") or [""])[0])
                if command.startswith("/usr/local/bin/"):
                    binaries.add(command.rsplit("/", 1)[1])
        selftest = Checks()
        self_test(docs, label, selftest)
        merge(selftest, f"{label} (self-test)")
        merge(check_documents(docs), label)
    for path in compose_paths:
        label = Path(path).stem
        compose = yaml.safe_load(Path(path).read_text())
        if list_only:
            for description, expected, _ in compose_mutations(compose):
                print(f"{label}: rejects {description} -> {expected}")
            continue
        selftest = Checks()
        compose_self_test(compose, label, selftest)
        merge(selftest, f"{label} (self-test)")
        merge(check_compose(compose), label)
    if list_only:
        return 0
    if dockerfile_path:
        text = Path(dockerfile_path).read_text()
        selftest = Checks()
        dockerfile_self_test(text, selftest)
        merge(selftest, "Dockerfile (self-test)")
        merge(check_dockerfile(text, binaries), "Dockerfile")
    for failure in total.failures:
        print(f"FAIL {failure}")
    print(f"{total.passed} passed, {len(total.failures)} failed")
    return 1 if total.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

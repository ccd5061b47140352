"""What a recovery did to the lab: times, pods, containers, evictions and the cluster's configuration.

Shared by ``kuberevive lab demo`` and ``benchmarks/vs_manual.py`` so both measure the same way:

* :func:`pods`, :func:`workload_containers`, :func:`evictions`: the state before and after;
* :class:`Clock`: from the start of a recovery, the first time ``/readyz`` answers (asked from the host,
  anonymously, as any client would) and the first time every node is Ready to the new control plane
  (``Ready=True`` and its kubelet's Lease renewed after the start: a condition left over from before
  the disaster does not count);
* :func:`settled`: every node Ready, every pod running and ready, the ServiceAccount-using pod calling
  the API again, the controller-manager on kubeadm's own manifest: "everything done".
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.request
from datetime import datetime
from typing import Any

from kuberevive.lab.cluster import Lab
from kuberevive.lab.config import WORKLOAD_NAMESPACE

MANIFESTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def _kubectl_json(lab: Lab, *args: str) -> dict[str, Any] | None:
    out = lab.cp.kubectl(*args, "-o", "json", check=False, timeout=30)
    if out.returncode != 0:
        return None
    try:
        data: dict[str, Any] = json.loads(out.stdout)
    except ValueError:
        return None
    return data


def _is_mirror(pod: dict[str, Any]) -> bool:
    return any(o.get("kind") == "Node" for o in pod["metadata"].get("ownerReferences", []))


def pods(lab: Lab, namespace: str | None = WORKLOAD_NAMESPACE) -> dict[str, dict[str, Any]]:
    """uid -> name, namespace, node, restarts, ready, deleting of each pod (static pods' mirrors left out)."""
    where = ["-n", namespace] if namespace else ["-A"]
    items = (_kubectl_json(lab, "get", "pods", *where) or {}).get("items", [])
    return {
        p["metadata"]["uid"]: {
            "name": p["metadata"]["name"],
            "namespace": p["metadata"]["namespace"],
            "node": p["spec"].get("nodeName", ""),
            "restarts": sum(s.get("restartCount", 0) for s in p.get("status", {}).get("containerStatuses", [])),
            "ready": p.get("status", {}).get("phase") == "Running"
            and all(s.get("ready") for s in p.get("status", {}).get("containerStatuses", [{}])),
            "deleting": bool(p["metadata"].get("deletionTimestamp")),
        }
        for p in items
        if not _is_mirror(p)
    }


def workload_containers(lab: Lab) -> dict[str, str]:
    """``node/pod/container`` -> container id of every running container of the workload namespace."""
    out: dict[str, str] = {}
    for n in lab.cfg.node_names:
        proc = lab.node(n).run(["crictl", "ps", "-o", "json"], step="crictl", check=False)
        if proc.returncode != 0:
            continue
        for c in json.loads(proc.stdout).get("containers", []):
            if c["labels"].get("io.kubernetes.pod.namespace") == WORKLOAD_NAMESPACE:
                out[f"{n}/{c['labels'].get('io.kubernetes.pod.name')}/{c['metadata']['name']}"] = c["id"]
    return out


def eviction_events(events: list[dict[str, Any]]) -> list[str]:
    """``namespace/pod: message`` of each taint-based eviction among Event objects (its cancellations left out)."""
    return [
        f"{e['involvedObject'].get('namespace')}/{e['involvedObject'].get('name')}: {e.get('message', '')}"
        for e in events
        if e.get("reason") == "TaintManagerEviction" and "Cancelling" not in e.get("message", "")
    ]


def evictions(lab: Lab) -> list[str]:
    return eviction_events((_kubectl_json(lab, "get", "events", "-A") or {}).get("items", []))


def cluster_configuration(lab: Lab) -> dict[str, str]:
    """The ClusterConfiguration stored in ``kube-system/kubeadm-config`` and the control-plane manifests."""
    cm = _kubectl_json(lab, "get", "configmap", "-n", "kube-system", "kubeadm-config") or {}
    out = {"kubeadm-config": cm.get("data", {}).get("ClusterConfiguration", "")}
    for m in MANIFESTS:
        proc = lab.cp.run(["cat", f"/etc/kubernetes/manifests/{m}.yaml"], step="reading a manifest", check=False)
        out[m] = proc.stdout if proc.returncode == 0 else ""
    return out


def api_ready(lab: Lab, timeout: float = 2.0) -> bool:
    """``GET https://<control plane>:6443/readyz`` from the host answers 200 (anonymous, certificate not checked)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        url = f"https://{lab.cfg.control_plane.ip}:6443/readyz"
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _time(text: str | None) -> float:
    if not text:
        return 0.0
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def nodes_ready(lab: Lab, since: float) -> dict[str, bool]:
    """Node name -> Ready with its kubelet's Lease renewed after ``since`` (wall clock)."""
    nodes = (_kubectl_json(lab, "get", "nodes") or {}).get("items", [])
    leases = (_kubectl_json(lab, "get", "leases", "-n", "kube-node-lease") or {}).get("items", [])
    renewed = {item["metadata"]["name"]: _time(item["spec"].get("renewTime")) for item in leases}
    out = {}
    for item in nodes:
        name = item["metadata"]["name"]
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in item["status"].get("conditions", []))
        out[name] = ready and renewed.get(name, 0.0) >= since
    return out


class Clock:
    """Seconds from :meth:`start` to the API's first answer and to every node Ready, polled in a thread."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.started = 0.0
        self.wall_started = 0.0
        self.api_ready_s: float | None = None
        self.nodes_ready_s: float | None = None
        self.api = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> None:
        self.started, self.wall_started = time.monotonic(), time.time()
        self._thread.start()

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 1)

    def _poll(self) -> None:
        while not self._stop.is_set() and self.api_ready_s is None:
            if api_ready(self.lab):
                self.api_ready_s = self.elapsed()
                self.api.set()
            else:
                self._stop.wait(0.25)
        while not self._stop.is_set():
            ready = nodes_ready(self.lab, self.wall_started)
            if set(self.lab.cfg.node_names) <= {n for n, ok in ready.items() if ok}:
                self.nodes_ready_s = self.elapsed()
                return
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def settled(lab: Lab, since: float) -> list[str]:
    """What is not done yet (empty: everything done) — see the module docstring."""
    missing = [f"node {n} not Ready" for n, ok in nodes_ready(lab, since).items() if not ok]
    for p in pods(lab, None).values():
        if not p["ready"] or p["deleting"]:
            missing.append(f"pod {p['namespace']}/{p['name']} not ready")
    kcm = lab.cp.run(["cat", f"/etc/kubernetes/manifests/{MANIFESTS[2]}.yaml"], step="reading", check=False).stdout
    if "-node-lifecycle-controller" in kcm or "--controllers=" not in kcm:
        missing.append("the controller-manager does not run kubeadm's manifest")
    if "apicaller ok" not in lab.apicaller_logs(tail=1):
        missing.append("apicaller does not call the API successfully")
    return missing


def wait_settled(lab: Lab, since: float, timeout: float = 600) -> list[str]:
    """Poll :func:`settled` until nothing is missing (returns []) or ``timeout`` (returns what is missing)."""
    deadline = time.monotonic() + timeout
    while True:
        missing = settled(lab, since)
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(2)

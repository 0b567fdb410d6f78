"""Cluster DNS for the test cluster: CoreDNS (built from its Go module) as a
Deployment in kube-system behind the ``kube-dns`` Service, as in a real cluster;
the kubelet points every ClusterFirst pod's resolv.conf at that Service's
ClusterIP, kube-proxy routes it.

:func:`resolve` asks CoreDNS from the host (through the same ClusterIP), so a
test process calls ``http://<service>.<namespace>.svc.cluster.local`` the way a
client in the cluster would, without touching the host's resolv.conf:
:func:`cluster_url` turns such a URL into one on the address CoreDNS answered.
"""
from __future__ import annotations

import json
import random
import socket
import struct
import urllib.parse

from .nodenet import NodeNetwork

NAMESPACE = "kube-system"
PORT = 1053  # in the container: a non-root CoreDNS binds no port below 1024


COREFILE = f""".:{PORT} {{
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    loadbalance
}}
"""


def manifests(net: NodeNetwork, image: str, node_name: str, tolerations: list[dict]) -> list[dict]:
    labels = {"k8s-app": "kube-dns"}
    meta = {"name": "coredns", "namespace": NAMESPACE}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "system:coredns"},
         "rules": [
             {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
              "verbs": ["list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": NAMESPACE}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"Corefile": COREFILE}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {**meta, "labels": labels},
         "spec": {
             "replicas": 1,
             "selector": {"matchLabels": labels},
             "template": {"metadata": {"labels": labels}, "spec": {
                 "serviceAccountName": "coredns",
                 "priorityClassName": "system-cluster-critical",
                 "dnsPolicy": "Default",
                 "nodeSelector": {"kubernetes.io/hostname": node_name},
                 "tolerations": tolerations,
                 "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                     "seccompProfile": {"type": "RuntimeDefault"}},
                 "containers": [{
                     "name": "coredns", "image": image, "imagePullPolicy": "Never",
                     "args": ["-conf", "/etc/coredns/Corefile"],
                     "ports": [{"name": "dns", "containerPort": PORT, "protocol": "UDP"},
                               {"name": "dns-tcp", "containerPort": PORT, "protocol": "TCP"}],
                     "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181},
                                        "periodSeconds": 1, "failureThreshold": 3},
                     "livenessProbe": {"httpGet": {"path": "/health", "port": 8080},
                                       "periodSeconds": 10, "failureThreshold": 5},
                     "resources": {"requests": {"memory": "32Mi"}, "limits": {"memory": "170Mi"}},
                     "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                         "capabilities": {"drop": ["ALL"]}},
                     "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
                 }],
                 "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
             }},
         }},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": NAMESPACE, "labels": labels},
         "spec": {"clusterIP": net.dns_ip, "selector": labels, "ports": [
             {"name": "dns", "port": 53, "targetPort": PORT, "protocol": "UDP"},
             {"name": "dns-tcp", "port": 53, "targetPort": PORT, "protocol": "TCP"}]}},
    ]


def manifest_text(net: NodeNetwork, image: str, node_name: str, tolerations: list[dict]) -> str:
    return "\n".join(json.dumps(doc) for doc in manifests(net, image, node_name, tolerations))


# --- a DNS client for the host ------------------------------------------------

class NotFound(LookupError):
    """CoreDNS answered, with no address (NXDOMAIN or no A record)."""


def resolve(name: str, server: str, port: int = 53, timeout: float = 2.0) -> list[str]:
    """The IPv4 addresses CoreDNS gives for ``name`` (an A query over UDP)."""
    query_id = random.randrange(1 << 16)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (server, port))
        while True:
            data, _ = sock.recvfrom(4096)
            if struct.unpack(">H", data[:2])[0] == query_id:
                break
    flags, qd, an = struct.unpack(">HHH", data[2:8])
    if flags & 0xF:
        raise NotFound(f"{name}: rcode {flags & 0xF} from {server}")
    offset = 12
    for _ in range(qd):
        offset = _skip_name(data, offset) + 4
    addresses = []
    for _ in range(an):
        offset = _skip_name(data, offset)
        rtype, _cls, _ttl, length = struct.unpack(">HHIH", data[offset:offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            addresses.append(socket.inet_ntoa(data[offset:offset + 4]))
        offset += length
    if not addresses:
        raise NotFound(f"{name}: no A record from {server}")
    return addresses


def _skip_name(data: bytes, offset: int) -> int:
    while True:
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:  # a compression pointer ends the name
            return offset + 2
        offset += 1 + length


def cluster_url(url: str, dns_server: str) -> tuple[str, str]:
    """(url on the resolved address, the Host header) for a URL whose host is a
    cluster name (``*.cluster.local``): resolved by CoreDNS."""
    parts = urllib.parse.urlsplit(url)
    address = resolve(parts.hostname, dns_server)[0]
    netloc = address + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), parts.netloc

"""The real node (kubelet + containerd + runc + CNI + kube-proxy + CoreDNS):
pods run in containers with their securityContext applied; logs, exec and the
termination message come from the kubelet; Services route through kube-proxy
and names resolve through CoreDNS; an image the node lacks fails with the
kubelet's own reason. The containers run the node tests' busybox toolbox
(tests/harness/node_images.py)."""
from __future__ import annotations

import ipaddress
import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.harness import coredns
from tests.harness.kubeapi import ApiError
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.cluster

RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                  "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]}}


def pod(name: str, image: str, script: str, **spec) -> dict:
    container = {"name": "main", "image": image, "imagePullPolicy": "Never",
                 "command": ["sh", "-c", script], "securityContext": dict(RESTRICTED_CONTAINER),
                 "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}
    container.update(spec.pop("container", {}))
    body = {"restartPolicy": "Never", "securityContext": dict(RESTRICTED_POD),
            "automountServiceAccountToken": False, "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {}}], **spec}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}}, "spec": body}


def create(kube, namespace: str, obj: dict) -> dict:
    plural = {"Pod": "pods", "Service": "services", "ConfigMap": "configmaps"}[obj["kind"]]
    return kube.raw.request("POST", f"/api/v1/namespaces/{namespace}/{plural}", obj)


def get_pod(kube, namespace: str, name: str) -> dict:
    return kube.raw.get(f"/api/v1/namespaces/{namespace}/pods/{name}")


def phase_is(kube, namespace: str, name: str, *phases: str):
    p = get_pod(kube, namespace, name)
    return p if p["status"].get("phase") in phases else None


def describe(kube, namespace: str, name: str):
    return lambda: json.dumps(get_pod(kube, namespace, name).get("status"), default=str)[:2000]


@pytest.fixture
def restricted_namespace(kube, namespace):
    """The test namespace under the `restricted` Pod Security Standard."""
    kube.raw.merge_patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}})
    return namespace


def test_a_container_runs_restricted_and_the_kubelet_reports_it(kube, restricted_namespace, real_node, toolbox_image):
    ns = restricted_namespace
    script = ("id -u; id -g; cat /proc/self/cgroup; "
              "echo finished-well > /dev/termination-log; "
              "while [ ! -e /tmp/stop ]; do sleep 0.1; done")
    create(kube, ns, pod("restricted", toolbox_image, script))
    running = wait_for(lambda: phase_is(kube, ns, "restricted", "Running", "Failed", "Succeeded"), 60,
                       what="pod running on the real node", describe=describe(kube, ns, "restricted"))
    assert running["spec"]["nodeName"] == real_node.name
    assert running["status"]["phase"] == "Running", running["status"]
    pod_ip = running["status"]["podIP"]
    assert pod_ip.startswith("198.19."), pod_ip
    # exec through the API server and the kubelet, into the running container
    assert kube.kubectl("-n", ns, "exec", "restricted", "--", "id", "-u").stdout.strip() == "1000"
    refused = kube.kubectl("-n", ns, "exec", "restricted", "--", "touch", "/written", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr, refused
    kube.kubectl("-n", ns, "exec", "restricted", "--", "touch", "/tmp/stop")
    done = wait_for(lambda: phase_is(kube, ns, "restricted", "Succeeded", "Failed"), 60,
                    what="pod finished", describe=describe(kube, ns, "restricted"))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    state = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 0 and state["reason"] == "Completed"
    assert state["message"] == "finished-well\n"  # read by the kubelet from the file
    log = kube.kubectl("-n", ns, "logs", "restricted").stdout.splitlines()
    assert log[:2] == ["1000", "1000"], log
    # in the kubepods cgroups below the node's own root
    assert any(f"{real_node.network.cgroup_root}/kubepods" in line for line in log[2:]), log


def test_the_restricted_policy_refuses_a_root_pod(kube, restricted_namespace, real_node, toolbox_image):
    body = pod("root", toolbox_image, "id")
    body["spec"]["securityContext"] = {"runAsUser": 0}
    with pytest.raises(ApiError) as refused:
        create(kube, restricted_namespace, body)
    assert refused.value.status == 403 and "restricted" in str(refused.value)


def test_services_route_through_kube_proxy_and_resolve_through_coredns(kube, namespace, real_node, toolbox_image):
    ns = namespace
    create(kube, ns, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "site"},
                      "data": {"index.html": f"served from {ns}\n"}})
    web = pod("web", toolbox_image, "httpd -f -p 8080 -h /www",
              volumes=[{"name": "tmp", "emptyDir": {}}, {"name": "www", "configMap": {"name": "site"}}],
              container={"volumeMounts": [{"name": "www", "mountPath": "/www"}],
                         "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}})
    create(kube, ns, web)
    service = create(kube, ns, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    cluster_ip = service["spec"]["clusterIP"]
    assert cluster_ip.startswith("198.19."), cluster_ip
    wait_for(lambda: get_pod(kube, ns, "web")["status"].get("containerStatuses", [{}])[0].get("ready"), 60,
             what="web pod Ready through its readiness probe", describe=describe(kube, ns, "web"))
    # From another pod: the cluster DNS name, the short name (search path), the ClusterIP.
    script = (f"wget -q -O - http://web.{ns}.svc.cluster.local/ && wget -q -O - http://web/ "
              f"&& wget -q -O - http://{cluster_ip}/")
    create(kube, ns, pod("client", toolbox_image, script))
    done = wait_for(lambda: phase_is(kube, ns, "client", "Succeeded", "Failed"), 60,
                    what="client pod finished", describe=describe(kube, ns, "client"))
    log = kube.kubectl("-n", ns, "logs", "client").stdout
    assert done["status"]["phase"] == "Succeeded", log
    assert log == f"served from {ns}\n" * 3
    # From the host, as a client outside the pods would: CoreDNS answers, kube-proxy routes.
    assert coredns.resolve(f"web.{ns}.svc.cluster.local", real_node.dns_ip) == [cluster_ip]
    url, host = coredns.cluster_url(f"http://web.{ns}.svc.cluster.local/", real_node.dns_ip)
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Host": host}), timeout=10) as r:
        assert r.read().decode() == f"served from {ns}\n"
    with pytest.raises(coredns.NotFound):
        coredns.resolve(f"absent.{ns}.svc.cluster.local", real_node.dns_ip)


def test_pods_behind_a_headless_service_have_dns_names(kube, namespace, real_node, toolbox_image):
    """What a multi-node job's rendezvous uses: <hostname>.<subdomain>.<ns>.svc."""
    ns = namespace
    create(kube, ns, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "peers"},
                      "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                               "selector": {"group": "peers"}, "ports": [{"port": 29500}]}})
    peer = pod("peer-0", toolbox_image, "nc -l -p 29500 > /tmp/received; cat /tmp/received",
               hostname="peer-0", subdomain="peers")
    peer["metadata"]["labels"]["group"] = "peers"
    create(kube, ns, peer)
    running = wait_for(lambda: phase_is(kube, ns, "peer-0", "Running"), 60, what="peer-0 running",
                       describe=describe(kube, ns, "peer-0"))
    name = f"peer-0.peers.{ns}.svc.cluster.local"
    wait_for(lambda: _resolves(name, real_node.dns_ip) == [running["status"]["podIP"]], 30,
             what=f"{name} in CoreDNS")
    # The message comes from a file, not a pipe: busybox's nc half-closes on its
    # own stdin's EOF, so the listener (stdin /dev/null) sends FIN at once, and a
    # client whose `echo` had not yet written saw that FIN first and left with
    # exit 0, having sent nothing. A file is readable at nc's first poll, which
    # reads stdin before the socket.
    create(kube, ns, pod("peer-1", toolbox_image, "echo hello-rank-0 > /tmp/message; "
                         "until nc peer-0.peers 29500 < /tmp/message; do sleep 0.2; done"))
    wait_for(lambda: phase_is(kube, ns, "peer-0", "Succeeded", "Failed"), 60, what="peer-0 received",
             describe=describe(kube, ns, "peer-0"))
    assert kube.kubectl("-n", ns, "logs", "peer-0").stdout == "hello-rank-0\n"


def _resolves(name: str, server: str) -> list[str]:
    try:
        return coredns.resolve(name, server)
    except coredns.NotFound:
        return []


@pytest.mark.parametrize("policy, reason", [("Never", "ErrImageNeverPull"), ("IfNotPresent", "ErrImagePull")])
def test_an_image_the_node_lacks_fails_with_the_kubelets_reason(kube, namespace, real_node, policy, reason):
    body = pod("absent", "localhost/kubetune/absent:1", "true",
               container={"imagePullPolicy": policy})
    create(kube, namespace, body)

    def waiting_reason():
        statuses = get_pod(kube, namespace, "absent")["status"].get("containerStatuses") or []
        waiting = statuses[0]["state"].get("waiting") if statuses else None
        return waiting if waiting and waiting["reason"] in (reason, "ImagePullBackOff") else None

    waiting = wait_for(waiting_reason, 60, what=f"container waiting with {reason}",
                       describe=describe(kube, namespace, "absent"))
    events = kube.raw.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    assert any(e["involvedObject"]["name"] == "absent" and e["source"].get("component") == "kubelet"
               and ("ErrImageNeverPull" in e["message"] or "Failed to pull image" in e["message"]
                    or e["reason"] == reason) for e in events), waiting


def test_extended_resources_are_advertised_and_scheduled(kube, namespace, real_node, toolbox_image):
    node_status = kube.raw.get(f"/api/v1/nodes/{real_node.name}")["status"]
    assert node_status["allocatable"]["nvidia.com/gpu"] == "8"
    body = pod("gpu", toolbox_image, "true",
               container={"resources": {"limits": {"nvidia.com/gpu": "1"}}})
    create(kube, namespace, body)
    done = wait_for(lambda: phase_is(kube, namespace, "gpu", "Succeeded", "Failed"), 60,
                    what="GPU pod ran", describe=describe(kube, namespace, "gpu"))
    assert done["status"]["phase"] == "Succeeded"


def test_a_second_cluster_runs_beside_and_leaves_nothing_behind(control_plane, tmp_path):
    """Two clusters at once (own slot, addresses, namespace, containerd), and
    stop removes the second one's containers, mounts, cgroups and network."""
    from kubernetes import client, config

    from tests.harness import cluster, node, node_images, nodenet

    second = cluster.start(tmp_path / "second")
    net = second.network
    try:
        assert net.slot != control_plane.node_slot
        assert second.api_url.split("//")[1].split(":")[0] == net.host_ip
        archive, digest = node_images.toolbox_archive()
        node_images.import_archive(net, archive, node_images.TOOLBOX_IMAGE, digest)
        core = client.CoreV1Api(config.new_client_from_config(config_file=second.kubeconfig))
        wait_for(lambda: core.list_namespaced_service_account("default").items, 30, what="default SA")
        core.create_namespaced_pod("default", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"},
            "spec": {"containers": [{"name": "main", "image": node_images.TOOLBOX_IMAGE,
                                     "imagePullPolicy": "Never", "command": ["sleep", "3600"],
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data", "emptyDir": {"medium": "Memory"}}]}})
        running = wait_for(lambda: core.read_namespaced_pod("sleeper", "default").status.phase == "Running", 60,
                           what="pod running on the second cluster's node")
        assert running
        ip = core.read_namespaced_pod("sleeper", "default").status.pod_ip
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(net.pod_cidr), ip
        assert node._mounts_below([node.node_dir(Path(second.run_dir)), net.state_dir])
    finally:
        cluster.stop(second)
    assert not node._mounts_below([node.node_dir(Path(second.run_dir)), net.state_dir])
    assert not Path(net.netns_path).exists()
    assert subprocess.run(["ip", "link", "show", net.host_if], capture_output=True).returncode != 0
    assert not any((h / net.cgroup_root.lstrip("/")).exists() for h in node._hierarchies())
    assert not node._shim_pids(net)
    assert nodenet.owner(net.slot) is None
    # ... while the session's cluster still answers through its own DNS.
    assert coredns.resolve("kubernetes.default.svc.cluster.local", control_plane.dns_ip)

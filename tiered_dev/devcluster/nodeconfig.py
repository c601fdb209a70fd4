"""The real node's configuration as data: its addresses and names, where its files live, and the pure builders
of what its programs read (containerd's config, the CNI network, KubeletConfiguration, KubeProxyConfiguration,
CoreDNS's objects, kube-router's RBAC, each program's command line). tiered_dev.devcluster.node runs them."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiered_dev.devcluster import build
from tiered_dev.devcluster.pki import REAL_NODE_NAME, Pki

REAL_NODE = REAL_NODE_NAME
BRIDGE = "tiered0"
NODE_IP = "10.200.0.1"
POD_CIDR = "10.200.0.0/24"
SERVICE_CIDR = "10.0.0.0/24"
CLUSTER_DNS = "10.0.0.10"
CLUSTER_DOMAIN = "cluster.local"
OUTSIDE_NETNS = "tiered-outside"
OUTSIDE_HOST_LINK = "tiered-out0"
OUTSIDE_GATEWAY = "10.201.0.1"
OUTSIDE_ADDRESSES = ("10.201.0.2", "10.201.0.3")
"""Two addresses in the outside namespace: a cloud tier declares one, the other shows that only it is open."""
KWOK_TAINT = {"key": "tiered.dev/simulated", "value": "kwok", "effect": "NoSchedule"}
"""On the KWOK node while a real node exists, so workloads land on the real one; a pod that should stay simulated
(scale tests with hundreds of replicas) tolerates it."""
REAL_NODE_LABELS = {"tiered.dev/node": "real"}
COREDNS_IMAGE = f"localhost/tiered/coredns:{build.COREDNS_VERSION}"
CONTAINERD_NAMESPACE = "k8s.io"
Progress = Callable[[str], None]


class RealNodeError(RuntimeError):
    """The real node cannot be brought up (or down); the message says what to do."""


@dataclass(frozen=True)
class NodePaths:
    """Every file of the node, under `<state>/node/`."""

    state: Path

    @property
    def root(self) -> Path:
        return self.state / "node"

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.containerd / "config.toml"

    @property
    def cni_bin(self) -> Path:
        return self.root / "cni" / "bin"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_data(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_root(self) -> Path:
        return self.kubelet / "root"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    @property
    def snapshot(self) -> Path:
        return self.root / "host-before.json"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def kubeconfig(self, name: str) -> Path:
        return self.state / "kubeconfigs" / name


# --- configuration files (pure builders) -------------------------------------------------------------------------


def containerd_config(paths: NodePaths, sandbox_image: str) -> str:
    """containerd 1.6 with its CRI plugin, everything under the node's directory.

    restrict_oom_score_adj: the machine lacks CAP_SYS_RESOURCE, and without it every sandbox fails with runc
    "can't get final child's PID from pipe: EOF". cgroupfs (SystemdCgroup false): PID 1 is not systemd."""
    c = paths.containerd
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{c / 'root'}"
state = "{c / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{paths.containerd_socket}"

[ttrpc]
  address = "{c / 'containerd.sock.ttrpc'}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{c / 'opt'}"

[{cri}]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
  discard_unpacked_layers = false

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  BinaryName = "{shutil.which('runc') or '/usr/sbin/runc'}"

[{cri}.cni]
  bin_dir = "{paths.cni_bin}"
  conf_dir = "{paths.cni_conf}"
  max_conf_num = 1

[{cri}.registry]
  config_path = ""
"""


def cni_config(paths: NodePaths) -> dict[str, Any]:
    """The bridge on `tiered0`, addresses from host-local in the pod CIDR, portmap for hostPorts."""
    return {
        "cniVersion": "1.0.0",
        "name": "tiered",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.cni_data),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


def kubelet_config(paths: NodePaths, pki: Pki, port: int, healthz_port: int) -> dict[str, Any]:
    """KubeletConfiguration for this machine: cgroup v1 with cgroupfs, no swap check, no oom_score_adj changes
    (no CAP_SYS_RESOURCE), image GC off (images cannot be pulled again here), everything under the node dir."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "oomScoreAdj": 0,
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "clusterDNS": [CLUSTER_DNS],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(paths.resolv_conf),
        "podLogsDir": str(paths.pod_logs),
        "volumePluginDir": str(paths.kubelet / "volume-plugins"),
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False,
        "maxPods": 60,
        "registerNode": True,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "shutdownGracePeriod": "0s",
        "logging": {"format": "text"},
    }


def kube_proxy_config(paths: NodePaths, healthz_port: int, metrics_port: int) -> dict[str, Any]:
    """iptables mode; NodePorts only on the node address; conntrack sysctls left as they are."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(paths.kubeconfig("kube-proxy"))},
        "mode": "iptables",
        "hostnameOverride": REAL_NODE,
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "oomScoreAdj": 0,
        "iptables": {"localhostNodePorts": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


COREFILE = f""".:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        ttl 30
    }}
    cache 30
    reload
}}
"""
"""No `forward`: names outside the cluster are answered REFUSED here, never asked of the machine's resolver."""


def coredns_objects() -> list[dict[str, Any]]:
    """CoreDNS as most distributions run it (kube-system, k8s-app=kube-dns, Service kube-dns at CLUSTER_DNS), so
    the operator's DNS egress rule selects it as it would on any cluster."""
    labels = {"k8s-app": "kube-dns"}
    meta = {"namespace": "kube-system", "labels": {**labels, "app.kubernetes.io/part-of": "tiered-dev"}}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", **meta}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "tiered-dev:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "tiered-dev:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tiered-dev:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", **meta},
         "data": {"Corefile": COREFILE}},
        {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coredns", **meta},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "dnsPolicy": "Default",
                        "nodeSelector": dict(REAL_NODE_LABELS),
                        "securityContext": {
                            "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"},
                            # Port 53 without root or capabilities (a namespaced, "safe" sysctl).
                            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}],
                        },
                        "containers": [{
                            "name": "coredns",
                            "image": COREDNS_IMAGE,
                            "imagePullPolicy": "Never",
                            "args": ["-conf", "/etc/coredns/Corefile"],
                            "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                      {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}],
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
                            "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10},
                            "resources": {"requests": {"cpu": "20m", "memory": "32Mi"},
                                          "limits": {"memory": "128Mi"}},
                            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "capabilities": {"drop": ["ALL"]}},
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
                        }],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", **meta},
            "spec": {
                "clusterIP": CLUSTER_DNS,
                "selector": labels,
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                          {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
            },
        },
    ]


def kube_router_rbac() -> list[dict[str, Any]]:
    """What kube-router's firewall reads (its upstream ClusterRole, firewall part) for the identity in pki."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "tiered-dev:kube-router"},
            "rules": [
                {"apiGroups": [""], "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
                 "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
                 "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["get", "list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "tiered-dev:kube-router"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "tiered-dev:kube-router"},
            "subjects": [{"kind": "User", "name": "tiered-kube-router", "apiGroup": "rbac.authorization.k8s.io"}],
        },
    ]


def process_argv(name: str, paths: NodePaths, bins: Path, ports: Mapping[str, int]) -> list[str]:
    if name == "containerd":
        return [shutil.which("containerd") or "containerd", "--config", str(paths.containerd_config)]
    if name == "kubelet":
        return [
            str(bins / "kubelet"), f"--config={paths.kubelet / 'config.yaml'}",
            f"--kubeconfig={paths.kubeconfig('kubelet')}", f"--root-dir={paths.kubelet_root}",
            f"--cert-dir={paths.kubelet / 'pki'}", f"--hostname-override={REAL_NODE}", f"--node-ip={NODE_IP}",
            "--node-labels=" + ",".join(f"{k}={v}" for k, v in REAL_NODE_LABELS.items()), "--v=1",
        ]
    if name == "kube-proxy":
        return [str(bins / "kube-proxy"), f"--config={paths.root / 'kube-proxy.yaml'}", "--v=1"]
    if name == "kube-router":
        return [
            str(bins / "kube-router"), f"--kubeconfig={paths.kubeconfig('kube-router')}",
            "--run-firewall=true", "--run-router=false", "--run-service-proxy=false", "--enable-cni=false",
            f"--hostname-override={REAL_NODE}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--health-port=0", "--metrics-port=0", "--iptables-sync-period=30s", "--v=1",
        ]
    raise ValueError(f"unknown node process {name!r}")

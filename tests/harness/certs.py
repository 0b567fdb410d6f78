"""TLS material for the local control plane, made with the openssl CLI (the dev
venv has no ``cryptography``): one CA, the API server's serving certificate for
loopback names, client certificates per component, and the service-account
signing key pair. EC P-256 keys keep generation well under a second."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ec_key(path: Path) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path.name, cwd=path.parent)


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"


def _sign(pki: Pki, name: str, subject: str, ext: str) -> None:
    d = pki.dir
    _ec_key(pki.key(name))
    (d / f"{name}.ext").write_text(ext)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=d)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", f"{name}.ext",
        "-out", f"{name}.crt", cwd=d,
    )


CLIENTS = {
    # name: subject. system:masters is the admin group; the others are the users
    # the bootstrap RBAC policy grants each control-plane component.
    "admin": "/O=system:masters/CN=kubetune-admin",
    "controller-manager": "/CN=system:kube-controller-manager",
    "scheduler": "/CN=system:kube-scheduler",
    # The API server's identity towards the kubelet API (logs, exec).
    "apiserver-kubelet-client": "/O=system:masters/CN=kube-apiserver-kubelet-client",
    # The real node: the kubelet as the Node authorizer knows it, and kube-proxy
    # (bound to system:node-proxier by the bootstrap policy).
    "kubelet-client": "/O=system:nodes/CN=system:node:{node}",
    "kube-proxy": "/CN=system:kube-proxy",
}


def make_pki(dir: Path, api_ips: tuple[str, ...] = (), node_ip: str | None = None,
             node_name: str = "kt-node-0") -> Pki:
    """``api_ips``: more addresses of the API server (the host link, the
    ``kubernetes`` Service's ClusterIP); ``node_ip``: the kubelet's address."""
    dir.mkdir(parents=True, exist_ok=True)
    pki = Pki(dir)
    _ec_key(pki.ca_key)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=kubetune-test-ca",
        "-days", "3650", "-sha256", "-out", "ca.crt",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=dir,
    )
    _sign(
        pki, "apiserver", "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,"
        "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
        "DNS:kubernetes.default.svc.cluster.local" + "".join(f",IP:{ip}" for ip in api_ips) + "\n",
    )
    # The kubelet endpoint (container logs, exec) on the node's address.
    _sign(
        pki, "kubelet", f"/CN={node_name}",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:" + node_name
        + (f",IP:{node_ip}" if node_ip else "") + "\n",
    )
    for name, subject in CLIENTS.items():
        _sign(
            pki, name, subject.format(node=node_name),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n",
        )
    # Service-account tokens: the API server signs with the private key and
    # verifies with the public one; the controller manager signs legacy tokens.
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=dir)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=dir)
    return pki


def serving_cert(pki: Pki, name: str, sans: str = "IP:127.0.0.1,DNS:localhost") -> tuple[Path, Path]:
    """(cert, key) of one more TLS server signed by the harness CA, for a server
    the API server calls by URL on loopback (e.g. Kueue's webhooks)."""
    _sign(
        pki, name, f"/CN={name}",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName={sans}\n",
    )
    return pki.cert(name), pki.key(name)

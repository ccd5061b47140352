"""Reading and checking a healthy control-plane peer's trust material (read only, over SSH): the salvage-trust
step of ``recover`` and ``diagnose --peer`` both use :func:`check_peer`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import PurePosixPath

from kuberevive.core import salvage
from kuberevive.core.diagnose import Finding
from kuberevive.errors import KubereviveError, PlanError
from kuberevive.io.tls import verify_server
from kuberevive.model import paths
from kuberevive.model.inventory import InventoryNode
from kuberevive.model.recover import RetrustOptions
from kuberevive.run.retrust import read_peer_files

PeerFiles = Callable[[InventoryNode, RetrustOptions, Sequence[PurePosixPath]], dict[PurePosixPath, bytes | None]]
VerifyTls = Callable[[str, int, bytes], None]


def check_peer(
    peer: InventoryNode,
    opts: RetrustOptions,
    certificates_dir: str,
    now: datetime,
    kubelet_client_pem: bytes | None,
    peer_files: PeerFiles = read_peer_files,
    verify_tls: VerifyTls = verify_server,
) -> tuple[dict[str, bytes], salvage.PeerEndpoints]:
    """The peer's trust material (pki-relative name -> bytes), checked, and its endpoints. PlanError (why, in a
    few words) when a check fails; TransportError/NodeFsError when the peer cannot be reached or read."""
    cdir = PurePosixPath(certificates_dir)
    wanted = [cdir / n for n in salvage.SALVAGE_FILES] + [paths.APISERVER_MANIFEST, paths.ETCD_MANIFEST]
    got = peer_files(peer, opts, wanted)
    endpoints = salvage.peer_endpoints(peer.name, got.get(paths.APISERVER_MANIFEST), got.get(paths.ETCD_MANIFEST))
    files = {n: got.get(cdir / n) for n in salvage.SALVAGE_FILES}
    problems = salvage.material_problems(files, now, kubelet_client_pem)
    if problems:
        raise PlanError(f"its trust material cannot be used: {'; '.join(problems)}")
    material = {n: data for n, data in files.items() if data is not None}
    try:
        verify_tls(endpoints.api_host, endpoints.api_port, material["ca.crt"])
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        where = endpoints.api
        raise PlanError(f"its API server at {where} does not serve with its ca.crt ({exc})") from None
    return material, endpoints


def peer_findings(
    kubelet_pem: bytes | None,
    peers: Sequence[InventoryNode],
    opts: RetrustOptions,
    certificates_dir: str,
    now: datetime,
    peer_files: PeerFiles = read_peer_files,
    verify_tls: VerifyTls = verify_server,
) -> list[Finding]:
    """``diagnose --peer``: one finding per peer, whether it holds usable trust material (nothing is written);
    ``kubelet_pem``: this node's kubelet client certificate, which the peer's CA must have issued."""
    out = []
    for peer in peers:
        try:
            check_peer(peer, opts, certificates_dir, now, kubelet_pem, peer_files, verify_tls)
        except KubereviveError as exc:
            out.append(salvage.peer_finding(peer, exc.message))
        else:
            out.append(salvage.peer_finding(peer, None))
    return out

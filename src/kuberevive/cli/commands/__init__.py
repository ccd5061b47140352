"""One module per command (each has ``register(subparsers)``), and what ``--help`` shows without importing them:
the one-line summary of each command and the ``Examples:`` block of every parser (keyed by its ``prog``)."""

from __future__ import annotations

#: Command word -> (module in this package, one-line summary). ``--help`` lists them in this order.
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("generate", "write what 'kubeadm init' writes to /etc/kubernetes, from a kubeadm configuration"),
    "diagnose": (
        "diagnose",
        "report what is wrong with a kubeadm node and what survives for a recovery (read-only)",
    ),
    "certs": ("certs", "check or renew the certificates of a kubeadm control-plane node"),
    "ca": ("ca", "extend the validity of the cluster's CAs with their own keys, everywhere they are held"),
    "recover": (
        "recover",
        "rebuild a control-plane node whose /etc/kubernetes is lost, from what survives (etcd, kubelet)",
    ),
    "replace-control-plane": (
        "replace_control_plane",
        "replace a lost control-plane node by a fresh machine (etcd learner, then promoted), from a healthy master",
    ),
    "quorum-restore": (
        "quorum_restore",
        "restore a stacked etcd that lost quorum from its best surviving member, then re-grow the others",
    ),
    "backup": ("backup", "encrypted backups of the control plane's PKI, configuration and etcd"),
    "restore-etcd": (
        "restore_etcd",
        "restore etcd's data directory from a snapshot or a kuberevive backup (single control-plane node)",
    ),
    "etcd-salvage": (
        "etcd_salvage",
        "guided salvage of this node's etcd (nospace: compact, defragment, disarm the NOSPACE alarm)",
    ),
    "version": ("version", "print kuberevive's version (-o json: a document)"),
    "completion": ("completion", "print a bash or zsh completion script (static: works offline)"),
    "lab": ("lab", "a real two-node kubeadm cluster on this machine, for tests and demos"),
}

#: Commands that work but are not listed by ``kuberevive --help`` (test tooling, not for production nodes).
HIDDEN = frozenset({"lab"})


def summary(word: str) -> str:
    return COMMANDS[word][1]


#: ``prog`` of a parser -> its examples (a command line, then ``#`` and what it does).
EXAMPLES: dict[str, tuple[str, ...]] = {
    "kuberevive": (
        "kuberevive diagnose                         # what is wrong with this node (read-only)",
        "kuberevive recover                          # the plan to rebuild a lost /etc/kubernetes; changes nothing",
        "kuberevive recover --apply                  # do it",
    ),
    "kuberevive generate": (
        "kuberevive generate all --config kubeadm.yaml --dry-run    # list every file; write nothing",
        "kuberevive generate certs --config kubeadm.yaml --root /mnt/node",
    ),
    "kuberevive diagnose": (
        "kuberevive diagnose",
        "kuberevive diagnose --root /mnt/node --offline --all",
        "kuberevive diagnose -o json | jq '.findings[] | select(.severity == \"error\")'",
    ),
    "kuberevive certs": (
        "kuberevive certs check",
        "kuberevive certs renew && kuberevive certs renew --apply",
    ),
    "kuberevive certs check": (
        "kuberevive certs check --expiry-warning-days 60   # exit 3: something expires within 60 days",
        "kuberevive certs check -o yaml",
    ),
    "kuberevive certs renew": (
        "kuberevive certs renew            # the plan; changes nothing",
        "kuberevive certs renew --apply    # renew, restart the control plane, wait for /readyz",
        "kuberevive certs renew --apply --all-nodes --ssh-key /root/.ssh/id_ed25519   # and every other kubelet",
    ),
    "kuberevive ca": ("kuberevive ca extend && kuberevive ca extend --apply --all-nodes",),
    "kuberevive ca extend": (
        "kuberevive ca extend                        # the plan: the CAs expiring within 30 days; changes nothing",
        "kuberevive ca extend --apply --all-nodes    # also every other node's kubelet, over SSH",
        "kuberevive ca extend ca --all --validity 87600h --apply",
    ),
    "kuberevive recover": (
        "kuberevive recover                # the plan: every file, pod, process and object, with why",
        "kuberevive recover --apply --ssh-key /root/.ssh/id_ed25519 --known-hosts /root/.ssh/known_hosts",
        "kuberevive recover --apply --ca-from /mnt/old/etc/kubernetes/pki   # keep the old CAs and sa.key",
    ),
    "kuberevive replace-control-plane": (
        "kuberevive replace-control-plane cp3 --ssh-key /root/.ssh/id_ed25519   # the plan; changes nothing",
        "kuberevive replace-control-plane cp3 --apply --ssh-key /root/.ssh/id_ed25519 --known-hosts FILE",
    ),
    "kuberevive quorum-restore": (
        "kuberevive quorum-restore --ssh-key /root/.ssh/id_ed25519 --known-hosts FILE   # the plan; changes nothing",
        "kuberevive quorum-restore --apply --ssh-key /root/.ssh/id_ed25519 --known-hosts FILE",
        "kuberevive quorum-restore --backup /var/backups/kuberevive-backup-cp1-20261204T210000Z.age "
        "--passphrase-file /root/backup.pass --ssh-key KEY --known-hosts FILE   # restore from a backup's snapshot",
    ),
    "kuberevive backup": (
        "kuberevive backup create --out /var/backups/ --passphrase-file /root/backup.pass",
        "kuberevive backup verify /var/backups/kuberevive-backup-cp1-20261204T210000Z.age --passphrase-file FILE",
    ),
    "kuberevive backup create": (
        "kuberevive backup create --out /var/backups/ --etcd-snapshot --keep 7 --passphrase-file /root/backup.pass",
        "kuberevive backup create --out /var/backups/ --recipient age1...",
    ),
    "kuberevive backup verify": ("kuberevive backup verify FILE --passphrase-file /root/backup.pass -o json",),
    "kuberevive backup list": ("kuberevive backup list /var/backups/",),
    "kuberevive backup prune": (
        "kuberevive backup prune /var/backups/ --keep 7 --dry-run",
        "kuberevive backup prune /var/backups/ --keep 7",
    ),
    "kuberevive backup restore": (
        "kuberevive backup restore FILE --dry-run --passphrase-file /root/backup.pass",
        "kuberevive backup restore FILE --passphrase-file /root/backup.pass   # only the missing files",
    ),
    "kuberevive etcd-salvage": (
        "kuberevive etcd-salvage nospace            # the plan: compact, defragment, disarm; changes nothing",
        "kuberevive etcd-salvage nospace --apply    # do it",
    ),
    "kuberevive restore-etcd": (
        "kuberevive restore-etcd --snapshot /var/backups/etcd.db",
        "kuberevive restore-etcd --snapshot BACKUP.age --passphrase-file /root/backup.pass",
    ),
    "kuberevive version": ("kuberevive version -o json",),
    "kuberevive completion": (
        "kuberevive completion bash > /etc/bash_completion.d/kuberevive",
        'kuberevive completion zsh > "${fpath[1]}/_kuberevive"',
    ),
    "kuberevive lab": ("kuberevive lab up && kuberevive lab demo && kuberevive lab down",),
    "kuberevive lab up": (
        "KUBEREVIVE_LAB_INSTANCE=2 kuberevive lab up",
        "KUBEREVIVE_LAB_INSTANCE=2 kuberevive lab up --control-planes 3 --workers 1",
    ),
    "kuberevive lab down": ("kuberevive lab down",),
    "kuberevive lab status": ("kuberevive lab status -o json",),
    "kuberevive lab demo": ("kuberevive lab demo",),
    "kuberevive lab exec": ("kuberevive lab exec cp1 -- crictl ps -a",),
    "kuberevive lab node": ("kuberevive lab node destroy cp3 && kuberevive lab node add cp3",),
    "kuberevive lab node destroy": ("kuberevive lab node destroy cp3   # its Node object and etcd member remain",),
    "kuberevive lab node add": (
        "kuberevive lab node add cp3                    # a fresh machine at cp3's address",
        "kuberevive lab node add cp4 --ip 172.30.0.20   # a new machine with a new name",
    ),
}

"""kuberevive: bring a kubeadm control plane back to life without disrupting running workloads."""

__version__ = "0.1.0"

#: The kubeadm release whose artifacts the core reproduces.
KUBEADM_VERSION = "v1.33.13"

#: The environment variable a backup's passphrase may come from (removed from the process environment at start).
PASSPHRASE_ENV = "KUBEREVIVE_PASSPHRASE"

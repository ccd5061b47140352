"""asyncssh, imported in one place.

cryptography 51 deprecated DSA: reading ``dsa.DSAPrivateKey`` now warns (``CryptographyDeprecationWarning``, a
``UserWarning``, printed on every run). asyncssh 2.24 names the DSA classes when it is imported
(``asyncssh/crypto/misc.py``), whether or not a DSA key is ever used, so every command that opens an SSH
connection printed that warning. kuberevive never uses DSA (its keys are ed25519/RSA/ECDSA, and OpenSSH stopped
accepting ssh-dss by default in 7.0), so the warning is silenced for asyncssh's import only; any other
deprecation still shows. Import ``asyncssh`` from here, never directly.
"""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="DSA is deprecated", category=CryptographyDeprecationWarning)
    import asyncssh

__all__ = ["asyncssh"]

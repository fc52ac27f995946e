"""OpenPGP test key and detached signatures for the test mirror (pysequoia).

The fixture signs its ISO with a key it generates itself, the way Alpine signs
its release images with the release manager's key: an ASCII-armored detached
signature (`<iso>.asc`).  aq must trust this key only when `AQ_TRUSTED_KEY`
names its public half, never by default.

The key is an OpenPGP v4 (RFC 4880) Ed25519/Cv25519 key, so GnuPG 2.2 (Debian
12) can verify the signature as well as Sequoia can.
"""

from __future__ import annotations

from pathlib import Path

import pysequoia

TEST_KEY_USER_ID = "aq test mirror (TEST KEY, never trust) <aq-test-mirror@example.invalid>"


def generate_key(secret_path: Path, public_path: Path, user_id: str = TEST_KEY_USER_ID) -> str:
    """Generate a signing key; write its secret and public halves ASCII-armored.

    Returns the primary key's fingerprint (40 lowercase hex digits).  The key
    has no passphrase and no expiry.
    """
    tsk = pysequoia.Tsk.generate(
        user_id,
        profile=pysequoia.Profile.RFC4880,
        cipher_suite=pysequoia.CipherSuite.Cv25519,
    )
    cert = tsk.extract_certificate()
    Path(secret_path).write_text(str(tsk))
    Path(secret_path).chmod(0o600)
    Path(public_path).write_text(str(cert))
    return cert.fingerprint


def sign_detached(secret_path: Path, data_path: Path, signature_path: Path) -> None:
    """Write an ASCII-armored detached signature of `data_path` to `signature_path`."""
    tsk = pysequoia.Tsk.from_file(str(secret_path))
    pysequoia.sign_file(
        tsk.signer(),
        str(data_path),
        str(signature_path),
        mode=pysequoia.SignatureMode.DETACHED,
        armor=True,
    )


def verify_detached(public_path: Path, data_path: Path, signature_path: Path) -> bool:
    """True if `signature_path` is a good signature of `data_path` by that key."""
    cert = pysequoia.Cert.from_file(str(public_path))
    sig = pysequoia.Sig.from_file(str(signature_path))
    try:
        pysequoia.verify(file=str(data_path), store=lambda _ids: [cert], signature=sig)
    except Exception:  # pysequoia raises a plain Exception on a bad signature
        return False
    return True

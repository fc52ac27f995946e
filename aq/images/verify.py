"""Is this ISO the one Alpine released? Its sha256, and its detached OpenPGP signature.

aq ships Alpine's signing key (aq/keys/ncopa.asc) and pins its fingerprint, so a
swapped key file is refused too. AQ_TRUSTED_KEY (or `aq config set trusted-key PATH`)
names one extra public key to accept beside it, for private mirrors and tests.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from aq import config
from aq.errors import InvalidInput, VerificationFailed
from aq.safetext import for_terminal

ALPINE_FINGERPRINT = "0482D84022F52DF1C4E7CD43293ACD0907D9495A"
ALPINE_KEY = Path(__file__).resolve().parent.parent / "keys" / "ncopa.asc"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _sequoia():
    # Keep Rust backtraces out of error messages (some machines set RUST_BACKTRACE=1).
    os.environ.setdefault("RUST_LIB_BACKTRACE", "0")
    import pysequoia

    return pysequoia


def trusted_certs() -> list:
    """Alpine's key (fingerprint checked) and the extra key the user trusts, if any."""
    sq = _sequoia()
    alpine = sq.Cert.from_file(str(ALPINE_KEY))
    if alpine.fingerprint.upper() != ALPINE_FINGERPRINT:
        raise VerificationFailed(
            f"aq's copy of Alpine's signing key has fingerprint {alpine.fingerprint.upper()}, "
            f"not {ALPINE_FINGERPRINT}",
            hint="reinstall aq",
        )
    certs = [alpine]
    extra = config.get("trusted-key")
    if extra:
        path = Path(extra).expanduser()
        try:
            certs += sq.Cert.split_file(str(path))
        except Exception as err:
            raise InvalidInput(
                f"cannot read the OpenPGP key {path} named by AQ_TRUSTED_KEY: "
                f"{str(err).splitlines()[0]}"
            ) from None
    return certs


def check_sha256(path: Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected.lower():
        raise VerificationFailed(
            f"{path.name} has sha256 {actual}, but the release says {expected}",
            hint="the download was corrupted or tampered with; run the command again",
        )


def check_signature(path: Path, signature: bytes) -> str:
    """Verify the detached signature over `path`; the signer's fingerprint, or raise."""
    sq = _sequoia()
    certs = trusted_certs()
    try:
        sig = sq.Sig.from_bytes(signature)
        result = sq.verify(file=str(path), signature=sig, store=lambda _ids: certs)
    except Exception as err:
        raise VerificationFailed(
            f"{path.name} failed its OpenPGP signature check: "
            f"{for_terminal((str(err).splitlines() or [''])[0], one_line=True)}",
            hint="the download is not signed by Alpine's key (or AQ_TRUSTED_KEY)",
        ) from None
    fingerprints = {c.fingerprint.upper() for c in certs}
    for valid in result.valid_sigs:
        if valid.certificate.upper() in fingerprints:
            return valid.certificate.upper()
    raise VerificationFailed(
        f"{path.name} has no valid signature from a trusted key",
        hint="the download is not signed by Alpine's key (or AQ_TRUSTED_KEY)",
    )

"""C2PA content credentials: a signed manifest saying a trained model made an image, when the
user has a signing certificate and key (``atelier generate --c2pa-cert CERT.pem --c2pa-key KEY.pem``).

The XMP packet (atelier.common.disclosure) says the same thing to everyone but can be stripped or
edited unnoticed; a C2PA manifest (through the C2PA project's own ``c2pa-python``) is bound to the
pixels by a hash and signed, so Content Credentials viewers show who vouches for it and whether the
file changed since. The manifest holds a ``c2pa.created`` action with IPTC ``digitalSourceType``
``trainedAlgorithmicMedia`` and the disclosure sentence, plus an ``org.atelier.provenance``
assertion (weights hash, training data provenance, generation settings). The XMP packet stays.

``c2pa-python`` is an optional dependency (``pip install 'atelier[c2pa]'``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from atelier.common.disclosure import TRAINED_ALGORITHMIC_MEDIA, disclosure_text, software
from atelier.common.fileio import atomic_write

ASSERTION_LABEL = "org.atelier.provenance"
MIME_TYPES = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
MAX_PEM_BYTES = 1 << 20


class CredentialsError(ValueError):
    """A certificate, key or file that cannot be used for signing; one line."""


@dataclass(frozen=True)
class Credentials:
    """A signing certificate chain (PEM, signer first) with its private key and algorithm."""

    cert_pem: bytes
    key_pem: bytes
    alg: str  # c2pa's name: es256 | es384 | es512 | ps256 | ed25519
    tsa_url: Optional[str] = None
    subject: str = ""


def _c2pa():
    try:
        import c2pa  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise CredentialsError("C2PA signing needs c2pa-python: pip install 'atelier[c2pa]'") from None
    return c2pa


def _read_pem(path: Path, what: str) -> bytes:
    try:
        if path.stat().st_size > MAX_PEM_BYTES:
            raise CredentialsError(f"{what} {path} is larger than {MAX_PEM_BYTES} bytes; not a PEM file")
        return path.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def load_credentials(cert: str | os.PathLike, key: str | os.PathLike, tsa_url: Optional[str] = None) -> Credentials:
    """Read and check a PEM certificate chain and its (unencrypted) PEM private key.

    The algorithm follows the key: EC P-256/384/521 -> es256/384/512, RSA -> ps256, Ed25519.
    Raises CredentialsError (one line) for unreadable files, a key that does not match the
    certificate, or a missing c2pa-python.
    """
    _c2pa()
    from cryptography import x509  # noqa: PLC0415 - a dependency of c2pa-python
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa  # noqa: PLC0415

    cert_pem, key_pem = _read_pem(Path(cert), "certificate"), _read_pem(Path(key), "private key")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise CredentialsError(f"certificate {cert}: not a PEM certificate chain ({exc})") from None
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CredentialsError(f"private key {key}: not an unencrypted PEM private key ({str(exc).splitlines()[0]})") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if chain[0].public_key().public_bytes(der, public) != private.public_key().public_bytes(der, public):
        raise CredentialsError(f"private key {key} does not belong to the first certificate in {cert}")
    if isinstance(private, ec.EllipticCurvePrivateKey):
        alg = {256: "es256", 384: "es384", 521: "es512"}.get(private.curve.key_size)
    elif isinstance(private, rsa.RSAPrivateKey):
        alg = "ps256"
    elif isinstance(private, ed25519.Ed25519PrivateKey):
        alg = "ed25519"
    else:
        alg = None
    if alg is None:
        raise CredentialsError(f"private key {key}: C2PA signs with EC P-256/384/521, RSA or Ed25519 keys")
    return Credentials(cert_pem, key_pem, alg, tsa_url, chain[0].subject.rfc4514_string())


def manifest(
    provenance: Optional[Mapping[str, Any]],
    weights_sha256: Optional[str],
    settings: Optional[Mapping[str, Any]] = None,
    title: Optional[str] = None,
    mime: str = "image/png",
) -> dict:
    """The C2PA manifest definition for one generated image."""
    name, _, version = software().partition(" ")
    agent = {"name": name, **({"version": version} if version else {})}
    definition: dict[str, Any] = {
        "claim_generator_info": [agent],
        "format": mime,
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                            "softwareAgent": agent,
                            "description": disclosure_text(provenance),
                        }
                    ]
                },
            },
            {
                "label": ASSERTION_LABEL,
                "data": json.loads(
                    json.dumps(
                        {"model_weights_sha256": weights_sha256, "provenance": dict(provenance or {}), "settings": dict(settings or {})},
                        default=str,
                    )
                ),
            },
        ],
    }
    if title:
        definition["title"] = title
    return definition


def sign_file(path: str | os.PathLike, credentials: Credentials, definition: Mapping[str, Any]) -> Path:
    """Embed a signed C2PA manifest into the image at ``path`` (replaced atomically)."""
    c2pa = _c2pa()
    path = Path(path)
    mime = MIME_TYPES.get(path.suffix.lower())
    if mime is None:
        raise CredentialsError(f"{path}: C2PA signing here supports {', '.join(sorted(MIME_TYPES))} files")
    info = c2pa.C2paSignerInfo(credentials.alg, credentials.cert_pem, credentials.key_pem, credentials.tsa_url)

    def write(tmp: Path) -> None:
        with c2pa.Signer.from_info(info) as signer, c2pa.Builder(dict(definition)) as builder:
            with open(path, "rb") as source, open(tmp, "w+b") as dest:
                builder.sign(signer, mime, source, dest)

    try:
        return atomic_write(path, write, fsync=False)
    except c2pa.C2paError as exc:
        raise CredentialsError(f"{path}: C2PA signing failed ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def read_credentials(path: str | os.PathLike) -> Optional[dict]:
    """The active manifest of a file as plain data: ``validation_state``, ``validation_status``
    codes, ``actions``, ``atelier`` (the provenance assertion) and ``signature_info``; None when
    the file has no C2PA manifest."""
    c2pa = _c2pa()
    try:
        with c2pa.Reader(str(path)) as reader:
            store = json.loads(reader.json())
    except c2pa.C2paError:
        return None
    active = store.get("manifests", {}).get(store.get("active_manifest"), {})
    assertions = {a.get("label"): a.get("data") for a in active.get("assertions", [])}
    actions = (assertions.get("c2pa.actions.v2") or assertions.get("c2pa.actions") or {}).get("actions", [])
    return {
        "validation_state": store.get("validation_state"),
        "validation_status": [s.get("code") for s in store.get("validation_status", [])],
        "actions": actions,
        "atelier": assertions.get(ASSERTION_LABEL),
        "signature_info": active.get("signature_info"),
    }


def have_c2pa() -> bool:
    """Whether c2pa-python is installed."""
    try:
        _c2pa()
    except CredentialsError:
        return False
    return True

"""C2PA content credentials (optional, c2pa-python): `generate --c2pa-cert/--c2pa-key` signs every
file with a manifest saying a trained model made it; tested with a CA and signer the test makes."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

pytest.importorskip("c2pa")

from cryptography import x509  # noqa: E402  (c2pa-python depends on it)
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402
from PIL import Image  # noqa: E402
from test_disclosure import SOURCE_TYPE, dataset, run_export  # noqa: E402

from atelier.common import content_credentials as C  # noqa: E402
from atelier.common import disclosure as D  # noqa: E402


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "atelier tests")])


def _usage(**on) -> x509.KeyUsage:
    flags = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    return x509.KeyUsage(**{**flags, **on})


def make_credentials(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a signing certificate it issued (C2PA refuses a bare self-signed signer);
    returns (chain.pem, key.pem, other_key.pem)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def cert(subject, issuer, public, signing_key, ca: bool):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )
        if ca:
            builder = builder.add_extension(_usage(key_cert_sign=True, crl_sign=True), critical=True)
        else:
            builder = (
                builder.add_extension(_usage(digital_signature=True), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            )
        return builder.sign(signing_key, hashes.SHA256())

    ca = cert(_name("atelier test CA"), _name("atelier test CA"), ca_key.public_key(), ca_key, True)
    leaf = cert(_name("atelier test signer"), ca.subject, key.public_key(), ca_key, False)
    pem = serialization.Encoding.PEM
    chain = folder / "chain.pem"
    chain.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    private = serialization.PrivateFormat.PKCS8
    (folder / "key.pem").write_bytes(key.private_bytes(pem, private, serialization.NoEncryption()))
    (folder / "other.pem").write_bytes(ca_key.private_bytes(pem, private, serialization.NoEncryption()))
    return chain, folder / "key.pem", folder / "other.pem"


def test_generate_signs_every_file_and_keeps_the_xmp_packet(tmp_path, capsys):
    from gan import generate

    chain, key, _ = make_credentials(tmp_path)
    dataset(tmp_path / "ds")
    export = run_export(tmp_path)
    out = tmp_path / "out"
    assert (
        generate.main(
            [
                "--checkpoint",
                str(export),
                "--out",
                str(out),
                "--seeds",
                "3",
                "--grid",
                "--interpolate",
                "0",
                "1",
                "--frames",
                "3",
                "--no-progress",
                "--device",
                "cpu",
                "--c2pa-cert",
                str(chain),
                "--c2pa-key",
                str(key),
            ]
        )
        == 0
    )
    for name in ("seed0003-psi0.70.png", "grid.png", "interp-seed0000-seed0001-psi0.70.gif"):
        creds = C.read_credentials(out / name)
        assert creds is not None, name
        assert creds["validation_state"] == "Valid"  # signature and pixel hash check out; the test CA is not trusted
        assert "signingCredential.untrusted" in creds["validation_status"]
        action = creds["actions"][0]
        assert action["action"] == "c2pa.created" and action["digitalSourceType"] == SOURCE_TYPE
        assert "in the style of Claude Monet, trained on 3 public-domain works" in action["description"]
        assert creds["atelier"]["provenance"]["dataset_sha256"] == "cd" * 32
        assert creds["signature_info"]["common_name"] == "atelier test signer"
        assert D.read_disclosure(out / name)["digital_source_type"] == SOURCE_TYPE  # the XMP packet stays
    with Image.open(out / "seed0003-psi0.70.png") as png:
        assert C.read_credentials(out / "seed0003-psi0.70.png")["atelier"]["model_weights_sha256"] == png.text["weights_sha256"]
        assert C.read_credentials(out / "seed0003-psi0.70.png")["atelier"]["settings"]["seed"] == 3


def test_tampered_file_fails_validation(tmp_path):
    chain, key, _ = make_credentials(tmp_path)
    path = D.write_png(Image.new("RGB", (16, 16), (10, 20, 30)), tmp_path / "a.png", D.build_xmp({}, "ef" * 32))
    C.sign_file(path, C.load_credentials(chain, key), C.manifest({}, "ef" * 32, {"seed": 1}, "a.png"))
    assert C.read_credentials(path)["validation_state"] == "Valid"
    with Image.open(path) as image:
        pixels = image.copy()
        text = dict(image.info)
    pixels.putpixel((0, 0), (255, 0, 0))
    data = path.read_bytes()
    tampered = tmp_path / "b.png"
    pixels.save(tampered, pnginfo=D.png_info(text.get(D.XMP_PNG_KEY)))
    assert C.read_credentials(tampered) is None  # re-saving drops the manifest: nothing vouches for it any more
    flipped = bytearray(data)
    idat = flipped.index(b"IDAT") + 8
    flipped[idat] ^= 0xFF
    (tmp_path / "c.png").write_bytes(bytes(flipped))
    assert C.read_credentials(tmp_path / "c.png")["validation_state"] == "Invalid"


def test_bad_credentials_are_one_line_errors(tmp_path, capsys):
    from gan import generate

    chain, key, other = make_credentials(tmp_path)
    base = ["--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--seeds", "1"]
    for extra, needle in (
        (["--c2pa-cert", str(chain)], "--c2pa-cert and --c2pa-key go together"),
        (["--c2pa-cert", str(chain), "--c2pa-key", str(other)], "does not belong to the first certificate"),
        (["--c2pa-cert", str(key), "--c2pa-key", str(key)], "not a PEM certificate chain"),
        (["--c2pa-cert", str(tmp_path / "nope.pem"), "--c2pa-key", str(key)], "cannot read certificate"),
    ):
        assert generate.main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err

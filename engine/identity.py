"""Identities: Ed25519 keys, domain-separated signing, membership certificates.

A signature covers the msgpack encoding of
`(PROTOCOL_VERSION, chain_id, signer, seq, not_after, sha256(payload))`:
the protocol version and chain separate domains, the signer's strictly
increasing sequence number makes replays detectable, and signing the digest
lets one signature authorize a whole batch. Membership can be shown by an
X.509 certificate whose Ed25519 key is certified by the operator's key.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable, Sequence

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from .records import ID_LENGTH_MAX, PROTOCOL_VERSION, Command, Envelope, Signature

_encode = msgspec.msgpack.Encoder().encode
ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-/")


def valid_id(value: str) -> bool:
    """Tell whether `value` may name a participant, asset, chain or command."""
    return 0 < len(value) <= ID_LENGTH_MAX and ID_CHARS.issuperset(value)


def signing_message(chain_id: str, signer: str, seq: int, not_after: int, digest: bytes) -> bytes:
    """Return the exact bytes a signer signs (domain separated, canonical)."""
    return _encode((PROTOCOL_VERSION, chain_id, signer, seq, not_after, digest))


def payload_digest(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


def derive_key(seed_text: str) -> SigningKey:
    """Derive a deterministic key from text: for tests, demos and replays only."""
    return SigningKey(hashlib.sha256(b"dvp-derived-key/1:" + seed_text.encode()).digest())


class Signer:
    """Sign envelopes for one identity, keeping its sequence number.

    `seq` is the last sequence number used; start it from
    `ledger.last_seq(signer_id)` when resuming a signer.
    """

    def __init__(self, signer_id: str, key: SigningKey, chain_id: str, seq: int = 0):
        self.id = signer_id
        self.key = key
        self.chain_id = chain_id
        self.seq = seq

    @property
    def public_key(self) -> bytes:
        return bytes(self.key.verify_key)

    def signature(self, payload: bytes, not_after: int = 0, chain_id: str | None = None) -> Signature:
        """Sign a payload's digest with the next sequence number."""
        return self.signature_of_digest(payload_digest(payload), not_after, chain_id)

    def signature_of_digest(self, digest: bytes, not_after: int = 0, chain_id: str | None = None) -> Signature:
        """Sign an already computed payload digest (one hash for many cosigners)."""
        self.seq += 1
        message = signing_message(chain_id or self.chain_id, self.id, self.seq, not_after, digest)
        return Signature(self.id, self.seq, self.key.sign(message).signature)

    def envelope(self, commands: Sequence[Command], not_after: int = 0) -> Envelope:
        """Encode `commands` and sign them once, as one batch."""
        payload = encode_commands(commands)
        return Envelope(self.chain_id, payload, (self.signature(payload, not_after),), not_after)

    def cosign(self, envelope: Envelope) -> Envelope:
        """Add this signer's signature to an envelope another party made."""
        sig = self.signature(envelope.payload, envelope.not_after, envelope.chain_id)
        return Envelope(envelope.chain_id, envelope.payload, envelope.signatures + (sig,), envelope.not_after)


def encode_commands(commands: Iterable[Command]) -> bytes:
    return _encode(tuple(commands))


def unsigned(chain_id: str, commands: Sequence[Command]) -> Envelope:
    """Wrap commands without signatures: accepted only by a ledger created
    with `signatures_required=False` (benchmarks, trusted embedding)."""
    return Envelope(chain_id, encode_commands(commands))


def verify_signature(public_key: bytes, message: bytes, sig: bytes) -> bool:
    try:
        VerifyKey(public_key).verify(message, sig)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


def verify_many(items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
    """Verify (public_key, message, signature) triples; picklable for a pool."""
    return [verify_signature(pk, message, sig) for pk, message, sig in items]


# ------------------------------------------------------- key files and certs


def save_key(key: SigningKey, path: str, passphrase: bytes) -> None:
    """Write a private key as PKCS#8 PEM encrypted with `passphrase`."""
    private = Ed25519PrivateKey.from_private_bytes(bytes(key))
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    with open(path, "wb") as handle:
        handle.write(pem)


def load_key(path: str, passphrase: bytes) -> SigningKey:
    """Read a key written by `save_key`; a wrong passphrase raises ValueError."""
    with open(path, "rb") as handle:
        private = serialization.load_pem_private_key(handle.read(), password=passphrase)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return SigningKey(raw)


def _utc(seconds: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)


def issue_certificate(
    operator_key: SigningKey,
    operator_id: str,
    participant_id: str,
    participant_public_key: bytes,
    not_before: int,
    not_after: int,
    serial: int = 1,
) -> bytes:
    """Issue a DER X.509 membership certificate signed by the operator's key."""
    issuer_key = Ed25519PrivateKey.from_private_bytes(bytes(operator_key))
    subject_key = Ed25519PublicKey.from_public_bytes(participant_public_key)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, participant_id)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, operator_id)]))
        .public_key(subject_key)
        .serial_number(serial)
        .not_valid_before(_utc(not_before))
        .not_valid_after(_utc(not_after))
        .sign(issuer_key, None)
    )
    return cert.public_bytes(serialization.Encoding.DER)


def certificate_not_after(der: bytes) -> int:
    """A certificate's notAfter, in seconds since the epoch."""
    return int(x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp())


def certificate_key(der: bytes, operator_key: bytes, participant_id: str, now: int) -> bytes | None:
    """Return the member's raw public key if the certificate is valid at `now`.

    Valid means: parses, is signed by the operator's key, names the
    participant as its subject, holds an Ed25519 key, and `now` falls within
    its validity period (ledger time, so replays agree). Otherwise None.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
        Ed25519PublicKey.from_public_bytes(operator_key).verify(cert.signature, cert.tbs_certificate_bytes)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(names) != 1 or names[0].value != participant_id:
            return None
        moment = _utc(now)
        if not (cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc):  # RFC 5280: inclusive
            return None
        key = cert.public_key()
        if not isinstance(key, Ed25519PublicKey):
            return None
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    except (InvalidSignature, ValueError, TypeError):
        return None

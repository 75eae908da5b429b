"""Records of the ledger: assets, participants, commands, signatures, entries.

Every record is a `msgspec.Struct`. Records that cross the trust boundary
(commands, envelopes, entries) are frozen, forbid unknown fields, and are
validated when their bytes are decoded, so everything past the boundary is
typed. Amounts are integers in minor units; times are integer seconds of
ledger time since the Unix epoch (UTC).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

ID_LENGTH_MAX = 128
CommandId = Annotated[str, msgspec.Meta(min_length=1, max_length=ID_LENGTH_MAX)]

PROTOCOL_VERSION = "dvp-ledger/1"
HASH_BYTES = 32
ZERO_HASH = bytes(HASH_BYTES)

ROLE_OPERATOR = "operator"
ROLE_ISSUER = "issuer"
ROLE_PARTICIPANT = "participant"
ROLE_ORACLE = "oracle"
ROLE_COMPLIANCE = "compliance"
ROLE_AUDITOR = "auditor"  # reads everything through the service; its signature authorizes nothing
ROLES = frozenset({ROLE_OPERATOR, ROLE_ISSUER, ROLE_PARTICIPANT, ROLE_ORACLE, ROLE_COMPLIANCE, ROLE_AUDITOR})

STATUS_ACTIVE = 0
STATUS_SUSPENDED = 1
STATUS_REMOVED = 2

ALL_ASSETS = "*"



class Asset(msgspec.Struct, gc=False, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Describe an asset: its unit, its ledger and how it is valued."""

    id: str
    kind: Literal["cash", "security"]
    decimals: int
    issuer: str
    chain: str = "main"
    asset_class: str = ""
    maturity: str = ""
    price_basis: Literal["per_100", "per_unit"] = "per_100"
    day_count: Literal["ACT/360", "ACT/365"] = "ACT/360"


class Participant(msgspec.Struct, kw_only=True):
    """Hold a member's identity, roles and status (mutable ledger state)."""

    id: str
    public_key: bytes
    roles: list[str]
    status: int = STATUS_ACTIVE
    certificate: bytes = b""
    valid_until: int = 0  # admitted by certificate: its notAfter (ledger seconds); 0: no expiry


class Genesis(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fix a ledger's identity: its chain, its operator and its rules."""

    chain_id: str
    operator: str
    operator_key: bytes
    at: int
    signatures_required: bool = True
    protocols: tuple[str, ...] = ()
    version: str = PROTOCOL_VERSION


# ---------------------------------------------------------------- commands


class Command(
    msgspec.Struct,
    gc=False,
    tag=True,
    tag_field="type",
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    array_like=True,
):
    """Base of every command: an idempotency id and the linked flag.

    `linked=True` chains a command with the next one in the batch: the chain
    succeeds as a whole or fails as a whole (TigerBeetle's linked events).
    """

    id: CommandId
    linked: bool = False


class Admit(Command, tag="admit", frozen=True):
    participant: str
    roles: tuple[str, ...] = (ROLE_PARTICIPANT,)
    public_key: bytes = b""
    certificate: bytes = b""


class Suspend(Command, tag="suspend", frozen=True):
    participant: str


class Reinstate(Command, tag="reinstate", frozen=True):
    participant: str


class Remove(Command, tag="remove", frozen=True):
    participant: str


class SetRoles(Command, tag="set_roles", frozen=True):
    participant: str
    roles: tuple[str, ...]


class RegisterAsset(Command, tag="register_asset", frozen=True):
    asset: Asset


class Mint(Command, tag="mint", frozen=True):
    asset: str
    target: str
    amount: int


class Burn(Command, tag="burn", frozen=True):
    asset: str
    amount: int


class Move(Command, tag="move", frozen=True):
    asset: str
    source: str
    target: str
    amount: int


class Hold(Command, tag="hold", frozen=True):
    """Escrow `amount` of the owner's `asset` for `beneficiary`; the id names the hold."""

    asset: str
    owner: str
    beneficiary: str
    amount: int
    expires_at: int = 0


class Release(Command, tag="release", frozen=True):
    hold: str
    to: Literal["beneficiary", "owner"]


class Encumber(Command, tag="encumber", frozen=True):
    """Pledge `amount` of the owner's holding to `beneficiary`; the id names it."""

    asset: str
    owner: str
    beneficiary: str
    amount: int


class Unencumber(Command, tag="unencumber", frozen=True):
    encumbrance: str


class Freeze(Command, tag="freeze", frozen=True):
    participant: str
    asset: str = ALL_ASSETS


class Unfreeze(Command, tag="unfreeze", frozen=True):
    participant: str
    asset: str = ALL_ASSETS


class SetConfig(Command, tag="set_config", frozen=True):
    key: str
    value: str


class Tick(Command, tag="tick", frozen=True):
    """Advance ledger time to `to` inside a batch (operator only), running due work.

    Lets one signed batch span many ledger instants, as a replay does.
    """

    to: int


ENGINE_COMMANDS: tuple[type[Command], ...] = (
    Admit,
    Suspend,
    Reinstate,
    Remove,
    SetRoles,
    RegisterAsset,
    Mint,
    Burn,
    Move,
    Hold,
    Release,
    Encumber,
    Unencumber,
    Freeze,
    Unfreeze,
    SetConfig,
    Tick,
)


# ------------------------------------------------------- envelopes, entries


class Signature(msgspec.Struct, gc=False, frozen=True, array_like=True, forbid_unknown_fields=True):
    signer: str
    seq: int
    sig: bytes


class Envelope(msgspec.Struct, gc=False, frozen=True, array_like=True, forbid_unknown_fields=True):
    """Carry encoded commands and the signatures that authorize them.

    `payload` is the msgpack encoding of a tuple of commands; each signature
    covers its SHA-256 digest together with the chain, the signer, the
    signer's sequence number and `not_after` (the last ledger second at which
    the envelope may be applied; 0 for no limit).
    """

    chain_id: str
    payload: bytes
    signatures: tuple[Signature, ...] = ()
    not_after: int = 0


class Event(msgspec.Struct, gc=False, frozen=True, array_like=True, forbid_unknown_fields=True):
    """Record something a protocol did on its own (due work, automatic steps)."""

    at: int
    protocol: str
    kind: str
    ref: str
    data: dict[str, str] = {}
    position: int = -1  # the batch position of the command that caused it; -1: due work before the batch


class Entry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One journal entry: a batch, its results, and the state it left."""

    seq: int
    prev: bytes
    at: int
    envelopes: tuple[Envelope, ...] = ()
    results: tuple[int, ...] = ()
    events: tuple[Event, ...] = ()
    digest: bytes = b""
    genesis: Genesis | None = None

"""Result codes: one per command, ordered by the precedence of the checks.

A command's result is the code of the first rule that refused it, or `OK`.
Lower codes are checked first: envelope-level refusals (signatures, sequence
numbers) come before the linked-chain codes, which come before the rules of
each command. Engine codes are below 100; each protocol owns a block of 100
(`protocols.dvp` uses 100-199, and so on) and registers its names here so
reports can print them.
"""

from __future__ import annotations

OK = 0
# Linked chains.
LINKED_EVENT_FAILED = 1
LINKED_EVENT_CHAIN_OPEN = 2
HANDLER_ERROR = 3  # a protocol handler raised on this input: refused, everything it did undone
# Envelope: checked before any command of the envelope.
WRONG_CHAIN = 10
UNSIGNED = 11
UNKNOWN_SIGNER = 12
BAD_SIGNATURE = 13
SIGNER_SUSPENDED = 14
REPLAYED_SEQUENCE = 15
STALE_SEQUENCE = 16
EXPIRED = 17
CERTIFICATE_EXPIRED = 18
SIGNER_READ_ONLY = 19  # an auditor signed: its role reads, it authorizes nothing
# Idempotency.
ID_CONFLICT = 20
ID_INVALID = 21
# Per command, in the order handlers check them.
UNAUTHORIZED = 30
UNKNOWN_PARTICIPANT = 31
PARTICIPANT_INACTIVE = 32
PARTICIPANT_EXISTS = 33
UNKNOWN_ASSET = 34
ASSET_EXISTS = 35
INVALID_AMOUNT = 36
INVALID_FIELD = 37
ACCOUNT_FROZEN = 38
INSUFFICIENT_FUNDS = 39
UNKNOWN_HOLD = 40
HOLD_NOT_RELEASABLE = 41
UNKNOWN_ENCUMBRANCE = 42
BAD_CERTIFICATE = 43
UNKNOWN_COMMAND = 44
SAME_ACCOUNT = 45

NAMES: dict[int, str] = {
    OK: "ok",
    LINKED_EVENT_FAILED: "linked_event_failed",
    LINKED_EVENT_CHAIN_OPEN: "linked_event_chain_open",
    HANDLER_ERROR: "handler_error",
    WRONG_CHAIN: "wrong_chain",
    UNSIGNED: "unsigned",
    UNKNOWN_SIGNER: "unknown_signer",
    BAD_SIGNATURE: "bad_signature",
    SIGNER_SUSPENDED: "signer_suspended",
    REPLAYED_SEQUENCE: "replayed_sequence",
    STALE_SEQUENCE: "stale_sequence",
    EXPIRED: "expired",
    CERTIFICATE_EXPIRED: "certificate_expired",
    SIGNER_READ_ONLY: "signer_read_only",
    ID_CONFLICT: "id_conflict",
    ID_INVALID: "id_invalid",
    UNAUTHORIZED: "unauthorized",
    UNKNOWN_PARTICIPANT: "unknown_participant",
    PARTICIPANT_INACTIVE: "participant_inactive",
    PARTICIPANT_EXISTS: "participant_exists",
    UNKNOWN_ASSET: "unknown_asset",
    ASSET_EXISTS: "asset_exists",
    INVALID_AMOUNT: "invalid_amount",
    INVALID_FIELD: "invalid_field",
    ACCOUNT_FROZEN: "account_frozen",
    INSUFFICIENT_FUNDS: "insufficient_funds",
    UNKNOWN_HOLD: "unknown_hold",
    HOLD_NOT_RELEASABLE: "hold_not_releasable",
    UNKNOWN_ENCUMBRANCE: "unknown_encumbrance",
    BAD_CERTIFICATE: "bad_certificate",
    UNKNOWN_COMMAND: "unknown_command",
    SAME_ACCOUNT: "same_account",
}


def register(codes: dict[int, str]) -> None:
    """Add a protocol's codes to the names table; refuse a clash."""
    for code, name in codes.items():
        known = NAMES.get(code)
        if known is not None and known != name:
            raise ValueError(f"result code {code} is taken by {known!r}, cannot name it {name!r}")
        NAMES[code] = name


def name(code: int) -> str:
    """Return a code's name, or `code_N` for one no module registered."""
    return NAMES.get(code, f"code_{code}")

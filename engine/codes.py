"""Result codes: one per command, and which one a command with several faults gets.

A command's result is `OK` or the code of the first rule that refused it.
The rules run in a fixed order, so a command with several faults always
gets the same code (tests/test_precedence.py runs a table of such commands):

1. The envelope, before any of its commands. A refused envelope gives its
   code to every command in it, chained or not. Among its faults the lowest
   code wins, whichever signature it is on: `wrong_chain` (10), `unsigned`,
   `unknown_signer`, `bad_signature`, `signer_suspended`,
   `replayed_sequence` (15, also one signer signing twice),
   `stale_sequence`, `expired` (17, the envelope's `not_after`),
   `certificate_expired`, `signer_read_only` (19).
2. The command id. A known id decides alone, before any rule of the
   command: the same content gives `ok` and changes nothing, other content
   `id_conflict` (20).
3. The command's own rules. The engine's codes, 30 to 45, are numbered in
   the order its commands check them, lower first, with one exception: a
   command acting on a record it names finds the record first
   (`unknown_hold`, `unknown_encumbrance`; for mint and burn the asset,
   `unknown_asset`, whose issuer is their authority), then checks the
   authority to act on it (`unauthorized`, and `hold_not_releasable` for
   returning a hold to its owner early) before anything else. Several
   parties: `unknown_participant` if any is unknown, before
   `participant_inactive` if any is inactive. So a zero move from a frozen
   account is `invalid_amount` (36), not `account_frozen` (38), and a move
   to oneself of more than one holds is `insufficient_funds` (39), not
   `same_account` (45). A protocol's command checks the engine codes it
   uses in this same order and places its own codes (100 and up) among
   them as the README's table "Which result code wins" lists, command by
   command.
4. Linked chains. The member of a chain that fails reports its own code (or
   `handler_error` (3) if its handler raised); every other member reports
   `linked_event_failed` (1). A chain whose members all passed but which is
   still open at the end of its envelope reports `linked_event_chain_open`
   (2) on its last member. These two never compete with a command's own
   code: they tell what became of the chain.

`id_invalid` (21) and `unknown_command` (44) never come from the state
machine: a payload with a malformed id or an unknown command does not
decode, and the ledger refuses the whole batch (`MalformedEnvelope`).

Engine codes are below 100; each protocol owns a block of 100
(`protocols.dvp` uses 100-199, and so on) and registers its names here so
reports can print them.
"""

from __future__ import annotations

from enum import IntEnum

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
# Per command, in the order handlers check them (see the module docstring for the one exception).
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


# The engine's codes as an IntEnum, built from the table above: `Code.INVALID_AMOUNT == 36`, and a result
# (a plain int, as `Ledger.submit` returns it) reads as `Code(result).name`. Protocol codes are named by
# `name(code)`; each protocol module keeps its own constants.
Code = IntEnum("Code", {label.upper(): value for value, label in sorted(NAMES.items())},  # type: ignore[misc]
               module=__name__, qualname="Code")
Code.__doc__ = "The engine's result codes (an IntEnum: each compares equal to its int)."

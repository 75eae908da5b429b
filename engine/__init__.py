"""A permissioned, append-only, multi-asset ledger: the engine under DvP, repo and HTLC.

The public API for embedding: `Ledger` (create, open, submit, read), the
records in `engine.records`, `Signer` for signing batches, and the result
codes in `engine.codes`.
"""

from . import codes
from .identity import Signer, derive_key, issue_certificate, load_key, save_key, unsigned
from .journal import JournalError, JournalLocked
from .ledger import Ledger, LedgerFault, MalformedEnvelope, ManualClock
from .protocol import Protocol, QueryAnswer
from .records import (
    Admit,
    Asset,
    Burn,
    Command,
    Encumber,
    Entry,
    Envelope,
    Freeze,
    Hold,
    Mint,
    Move,
    RegisterAsset,
    Reinstate,
    Release,
    Remove,
    SetConfig,
    SetRoles,
    Suspend,
    Tick,
    Unencumber,
    Unfreeze,
)
from .state import State

__all__ = [
    "Admit", "Asset", "Burn", "Command", "Encumber", "Entry", "Envelope", "Freeze", "Hold",
    "JournalError", "JournalLocked", "Ledger", "LedgerFault", "MalformedEnvelope", "ManualClock", "Mint", "Move",
    "Protocol", "QueryAnswer", "RegisterAsset", "Reinstate", "Release", "Remove", "SetConfig", "SetRoles",
    "Signer", "State", "Suspend", "Tick", "Unencumber", "Unfreeze", "codes", "derive_key",
    "issue_certificate", "load_key", "save_key", "unsigned",
]

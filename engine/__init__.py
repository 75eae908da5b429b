"""A permissioned, append-only, multi-asset ledger: the engine under DvP, repo and HTLC.

The public API for embedding: `Ledger` (create, open, submit, read), the
records in `engine.records`, `Signer` for signing batches, the result
codes in `engine.codes`, and the typed answers of `Ledger.trade`,
`Ledger.repo` and `Ledger.history` (`engine.queries`, `engine.history`).
"""

from . import codes
from .faults import LedgerFault, MalformedEnvelope
from .history import AccountChange, CommandRef, RecordEvent
from .identity import (
    Signer,
    derive_key,
    issue_certificate,
    load_key,
    save_key,
    unsigned,
)
from .journal import JournalError, JournalLocked
from .ledger import Ledger, ManualClock
from .protocol import Protocol, QueryAnswer
from .queries import MarginCallState, RecordHistory, RepoState, Shortfall, TradeStatus
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
    "AccountChange", "Admit", "Asset", "Burn", "Command", "CommandRef", "Encumber", "Entry", "Envelope", "Freeze",
    "Hold", "JournalError", "JournalLocked", "Ledger", "LedgerFault", "MalformedEnvelope", "ManualClock",
    "MarginCallState", "Mint", "Move", "Protocol", "QueryAnswer", "RecordEvent", "RecordHistory", "RegisterAsset",
    "Reinstate", "Release", "Remove", "RepoState", "SetConfig", "SetRoles", "Shortfall", "Signer", "State",
    "Suspend", "Tick", "TradeStatus", "Unencumber", "Unfreeze", "codes", "derive_key", "issue_certificate",
    "load_key", "save_key", "unsigned",
]

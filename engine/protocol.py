"""The extension point: how a settlement protocol plugs into the engine.

A protocol names itself, lists its command types, gives a handler per
command, and keeps its own state (a `msgspec.Struct`) inside the ledger
state, so the journal, digests and snapshots cover it. Handlers run inside
the engine's atomic context: they read state freely but write only through
the primitives of `engine.state.State` (`transfer`, `hold`, `release`,
`encumber`, `put`, `pop`, `schedule`, `emit`), which makes every write
undoable. A handler returns a result code; any code but OK rolls back what
the command (or its linked chain) did.

Protocols are found through the entry-point group `dvp.protocols`, so any
tool opening a journal can replay every command in it.

Reads: a protocol may answer reads of its records (`query`) and name the
record each of its commands concerns (`record_of`), so a service can show a
participant the trades or repos it is party to without knowing what they
are. Both only read; neither may change state.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from importlib import metadata
from typing import Any, TypeAlias

import msgspec

from .records import Command
from .state import State, Timer

# Who signed a batch: a tuple (a frozenset past a few signers), or None for the ledger itself.
Authority: TypeAlias = "Collection[str] | None"
Handler = Callable[[State, Any, Authority], int]
ENTRY_POINT_GROUP = "dvp.protocols"


class QueryAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """One of a protocol's records, as a read sees it.

    `parties` are the participants entitled to see it (the operator and the
    compliance and auditor roles see everything anyway); `record` is any
    msgspec-encodable value (a Struct, a dict of str/int); `status` names
    where it stands ("queued", "open", ...).
    """

    kind: str
    key: str
    status: str
    parties: tuple[str, ...]
    record: Any = None


class Protocol:
    """Base class: override the attributes and the methods you need."""

    name: str = ""
    # The version of the protocol's rules. Raise it whenever a change would make an existing journal
    # replay differently (other state, events or codes): the genesis records it, and a journal written
    # under other rules is refused when opened instead of failing its digests half-way.
    version: int = 1
    state_type: type = msgspec.Struct
    codes: dict[int, str] = {}
    # Prefixes of the hold and encumbrance names this protocol uses (e.g. "htlc:"): the engine's own Hold,
    # Release, Encumber and Unencumber refuse such a name as `unauthorized`, so only this protocol's handlers
    # (through `State.hold`, `release`, ...) create or release them.
    reserved_prefixes: tuple[str, ...] = ()

    def new_state(self) -> Any:
        return self.state_type()

    def handlers(self) -> dict[type[Command], Handler]:
        """Map each command type this protocol defines to its handler."""
        return {}

    def on_due(self, state: State, timer: Timer) -> int:
        """Run work scheduled with `state.schedule(..., self.name, kind, ref)`."""
        return 0

    def after_batch(self, state: State) -> None:
        """Run once after each batch's commands."""

    def on_time(self, state: State) -> None:
        """Run at the end of each ledger instant, just before time moves on
        (e.g. a liquidity-saving pass over a queue)."""

    def on_rise(self, state: State, accounts: list[tuple[str, str]]) -> None:
        """React to credits on watched (asset, participant) accounts, after the
        command that made them committed (e.g. recycle queued instructions)."""

    def on_notice(self, state: State, topic: str, key: str) -> None:
        """React to `state.notify(topic, key)` from another protocol, inside its atomic step."""

    def loaded(self, state: State) -> None:
        """Rebuild derived runtime data (such as `state.watch`) after a snapshot load."""

    # Kinds of record this protocol answers reads of (e.g. "trade"); its events' `ref` names such a record.
    query_kinds: tuple[str, ...] = ()
    # Event kinds that end a record (it leaves the live state), and the status it then reports.
    record_outcomes: dict[str, str] = {}

    def query(self, state: State, kind: str, key: str) -> list[QueryAnswer]:
        """Answer a read of the live records of `kind` named `key` (several may share a key); [] if none."""
        return []

    def record_of(self, command: Command) -> QueryAnswer | None:
        """Name the record one of this protocol's commands concerns, and its parties, from the command alone.

        `status` is what to report once the record is no longer live when
        no event said otherwise (a DvP `Settle` that settled at once emits
        nothing); `parties` may be () when the command does not name them.
        """
        return None


def rules_tag(protocol: Protocol) -> str:
    """How the genesis names a protocol: `name`, or `name@version` from version 2 on."""
    return protocol.name if protocol.version == 1 else f"{protocol.name}@{protocol.version}"


def parse_rules_tag(tag: str) -> tuple[str, int]:
    """The (name, version) a genesis tag stands for: the inverse of `rules_tag`."""
    name, _, version = tag.partition("@")
    return name, int(version) if version.isdigit() else 1


def discover() -> list[Protocol]:
    """Instantiate every protocol registered under `dvp.protocols`, by name."""
    found = []
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        found.append(ep.load()())
    return found

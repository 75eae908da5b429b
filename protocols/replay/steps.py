"""Steps: the typed records that flow between the replay's stages.

Takes nothing; gives the records each stage hands the next:

- `Instruction`: one engine command for one ledger (the main chain, or a
  side chain during set-up), the parties who must sign it, the line it
  came from (0 for the replay's own control commands) and its time;
- `Swap`: a cross-chain DvP to run as a hashed-timelock swap;
- `ChainTime`: bring every chain's ledger time to `at` (each cut-off, and
  the end of the file), so every lock's expiry sweep runs;
- `Batch`: an encoded batch of instructions for one ledger, with the
  signers it needs;
- `SwapResult`: the result code of each step of a swap.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.records import Command

MAIN = "main"


class Instruction(msgspec.Struct, array_like=True, gc=False):
    line: int  # the trade-file line it came from; 0 for the replay's own control commands
    at: int  # the line's time (0 for set-up)
    command: Command
    signers: tuple[str, ...]
    tick: bool = False  # ledger time moves to `at` before it runs
    chain: str = MAIN


class Swap(msgspec.Struct, array_like=True, gc=False):
    line: int
    at: int
    terms: Any  # protocols.swap.SwapTerms
    security_chain: str
    cash_chain: str


class ChainTime(msgspec.Struct, array_like=True, gc=False):
    at: int


class Batch(msgspec.Struct, array_like=True, gc=False):
    chain: str
    payload: bytes  # the msgpack encoding of the commands
    signers: list[str]  # sorted
    instructions: list[Instruction | None]  # one per command; None for a Tick the batch stage added


class SwapResult(msgspec.Struct, array_like=True, gc=False):
    first: int  # the initiator's lock
    second: int = -1  # the follower's lock (-1: not tried)
    reveal: int = -1  # the initiator's claim, revealing the secret
    follow: int = -1  # the follower's claim with the revealed secret


Step = Instruction | Swap | ChainTime

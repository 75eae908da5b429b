"""Settlement models: the six ways the study settles the same day, each a trade-file configuration.

Takes nothing; gives `MODELS`, each a `Model` whose `config` the study
writes into the derived trade file, so every model runs through the real
engine and protocols (`protocols.dvp`, `protocols.netting`), never a side
model. The BIS (CPSS 1997) settlement models:

- `rtgs_no_queue`: gross, real time, no queue (`queue: false`): a trade its
  parties cannot cover when it arrives fails at once.
- `rtgs_queue`: gross, with a FIFO queue and recycling
  (`offsetting: false`): a queued trade is retried, oldest first, whenever
  an account it waits on is credited; what still waits fails at the cut-off.
- `rtgs_queue_lsm`: the same queue plus liquidity-saving offsetting
  (the engine's default): bilateral offsetting per pair of parties, then
  multilateral offsetting by iterative removal of the latest-arrived debit
  of any account that would end negative (Bech & Soramäki 2001), each set
  settled in one atomic step. The pass runs at the end of a ledger instant
  when trades queued since its last run and `dvp.offset_interval` (300 s)
  has passed, and always at the cut-off.
- `dns_hourly`: deferred net settlement (BIS model 3), a multilateral net
  cycle every hour (aligned to UTC hours) and at the cut-off; a
  participant that cannot cover its net debit is unwound.
- `dns_cutoff`: deferred net settlement with one cycle, at the cut-off.
- `bilateral_hourly`: hourly cycles of bilateral netting: each pair's net
  flow per asset is one movement. The ledger settles a cycle in one atomic
  step, so the liquidity it draws equals the multilateral cycle's; the
  study also reports what sequential bilateral settlement would need.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Model:
    name: str
    label: str
    config: dict[str, Any]  # trade-file config fields that select it
    gross: bool
    offsetting: bool = False

    @property
    def mode(self) -> str:
        return "gross" if self.gross else "net"


MODELS: tuple[Model, ...] = (
    Model("rtgs_no_queue", "RTGS, no queue", {"mode": "gross", "queue": False, "offsetting": False}, True),
    Model("rtgs_queue", "RTGS, FIFO queue + recycling", {"mode": "gross", "offsetting": False}, True),
    Model("rtgs_queue_lsm", "RTGS, queue + offsetting (LSM)", {"mode": "gross"}, True, offsetting=True),
    Model("dns_hourly", "DNS, hourly cycles", {"mode": "net", "netting_cycle": "PT1H"}, False),
    Model("dns_cutoff", "DNS, one cycle at the cut-off", {"mode": "net"}, False),
    Model("bilateral_hourly", "bilateral netting, hourly", {"mode": "net", "netting_cycle": "PT1H",
                                                            "bilateral": True}, False),
)
MODEL_BY_NAME = {m.name: m for m in MODELS}

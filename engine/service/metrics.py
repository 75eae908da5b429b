"""Prometheus metrics of one service, in a registry of its own (`GET /metrics`).

Entries and commands committed, refusals by result-code name, commit
latency (one `Ledger.submit` of a group), commands per entry, requests by
route and status, submissions waiting for the writer, open event streams,
and the head entry's sequence number. prometheus_client is thread-safe: the
writer thread and the event loop both update them.
"""

from __future__ import annotations

from collections import Counter

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client import Counter as PromCounter

from .. import codes as C
from ..records import Entry

COMMIT_BUCKETS_SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
GROUP_BUCKETS_COMMANDS = (1, 2, 8, 32, 128, 512, 2048, 8192, 32768, 131072)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.entries = PromCounter("dvp_entries", "Journal entries committed by this server", registry=r)
        self.commands = PromCounter("dvp_commands", "Commands committed (any result)", registry=r)
        self.refusals = PromCounter("dvp_refusals", "Commands refused, by result code name", ["code"], registry=r)
        self.commit_seconds = Histogram("dvp_commit_seconds", "Time to apply and durably commit one group",
                                        buckets=COMMIT_BUCKETS_SECONDS, registry=r)
        self.group_commands = Histogram("dvp_group_commands", "Commands per journal entry (group commit)",
                                        buckets=GROUP_BUCKETS_COMMANDS, registry=r)
        self.requests = PromCounter("dvp_requests", "HTTP requests answered, by route and status",
                                    ["route", "status"], registry=r)
        self.queue_depth = Gauge("dvp_queue_depth", "Submissions waiting for the writer or being committed",
                                 registry=r)
        self.snapshot_seconds = Histogram("dvp_snapshot_seconds", "Time to write one state snapshot",
                                          buckets=COMMIT_BUCKETS_SECONDS, registry=r)
        self.streams = Gauge("dvp_streams", "Open event streams", registry=r)
        self.signatures_checked = PromCounter("dvp_signatures_checked", "Envelope signatures the writer verified "
                                              "before the journal", registry=r)
        self.head_seq = Gauge("dvp_head_seq", "Sequence number of the journal's head entry", registry=r)

    def committed(self, entry: Entry, seconds: float, commands: int, codes: Counter) -> None:
        self.entries.inc()
        self.commands.inc(commands)
        self.commit_seconds.observe(seconds)
        self.group_commands.observe(commands)
        self.head_seq.set(entry.seq)
        for code, count in codes.items():
            if code != C.OK:
                self.refusals.labels(C.name(code)).inc(count)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

"""The ledger as a network service: `dvp serve`, signed commands, signed reads, an event stream.

Modules, each doing one thing:

- `wire`: the typed records requests and answers carry, and the `Limits`.
- `auth`: signed requests, the nonce memory, rate limits.
- `views`: the service's indexes over the journal (envelopes applied,
  protocol records, hold parties) and what each reader may see.
- `writer`: the single writer thread and its group commit.
- `metrics`: Prometheus metrics.
- `app`: the Starlette application; `server`: `dvp serve` on uvicorn.

The client is `engine.client`. Everything here needs the `service` extra
(Starlette, uvicorn, sse-starlette, prometheus_client); `wire` and `auth`
need only the core dependencies, so the client does not pull in a server.
See docs/service.md.
"""

from .wire import Limits

__all__ = ["Limits"]

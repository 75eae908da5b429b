"""The gross-versus-net study: settlement models on one workload, the liquidity-delay frontier, plots.

Modules, in the order a study runs them:

- `workload`: read a trade file of one settlement day; write the derived
  files each run replays (another model, other openings).
- `models`: the six settlement models, each a trade-file configuration.
- `bounds`: each participant's upper and lower bound of cash (UB, LB).
- `metrics`: one run's figures and the invariants it must keep.
- `sweep`: every model at every liquidity level, on a process pool or a
  Dask cluster; checks across points; findings.
- `plots`: the frontier as CSV and PNG.
- `suites`: the `frontier` and `compare` suites (`dvp bench`).

Layering: benchmarks -> protocols -> engine; every run goes through
`protocols.replay.replay`, so every model is the real engine's.
"""

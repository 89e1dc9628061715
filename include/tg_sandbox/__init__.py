"""Trading Grid sandbox: a real HTTP service implementing contract v1 (/work/shared/trading-grid-api.md).

Run it with ``python -m include.tg_sandbox --seed include/tg_sandbox/demo_seed.yaml``; see
docs/trading-grid-sandbox.md for the seed format, the fault injection API and the partner page.
"""

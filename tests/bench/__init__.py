"""Benchmarks (``make bench``; never part of ``make test``): the real server process on
loopback against a bare reference route in the same process, the dispatcher against a fake
Graph API beside the raw httpx ceiling, printed as one table of ratios from one run
(tests/bench/test_bench.py). tests/bench/knobs.py lists what the environment may change."""

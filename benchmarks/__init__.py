"""Speed and scale benchmarks for vaescope: `python -m benchmarks.run [--quick] [--only NAME]`.

Each module measures one figure against a baseline taken in the same run and returns rows for the
results table; ``benchmarks.run`` prints the table and writes ``benchmarks/results/latest.{json,md}``.
These are measurements, not tests: nothing here passes or fails, a missed target is reported.
"""

"""The end-to-end fault suite: the real bot and the WaveSpeed simulator as processes of their
own, faults on every side, and a count of what came of every command.

`harness` runs one scenario and counts; `scenarios` holds the scenarios, their sizes and the
table; `simulator` runs the simulator as a process. `tests/test_fault_suite.py` runs every
scenario small, `benchmarks/fault_suite.py` runs them at full size.
"""

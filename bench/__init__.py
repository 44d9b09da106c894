"""`make bench`: what each Trellis operation costs in AWS requests, how it scales, and how close it runs to its limits.

Everything runs on moto (no AWS account): in-process, except the soak, which runs the twin as `make demo` does.
``python -m bench.run`` prints the tables and writes them to ``bench/RESULTS.md``; ``BENCH_QUICK=1`` (or
``--quick``) uses small sizes.
"""

"""Benchmarks of the training loop's overheads, measured side by side in one run on one device.

    python -m bench            # all sections; writes BENCHMARKS.md
    python -m bench --quick    # fewer repetitions, for a smoke check

Every figure is a ratio against a baseline timed in the same process, interleaved with it, so that
the machine's speed cancels out; absolute milliseconds are printed for context only.
"""

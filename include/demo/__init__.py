"""Demo set-up: the partner folders on the embedded SFTP server and sample files in them.

Used by ``scripts/demo.py`` and ``python -m include.demo``; never imported by DAGs. The file
contents come from the project's test-data generator (``tests.data.bad_inputs``), so the demo's
good files pass the same suites the tests use and its bad files fail them for a known reason.
"""
from include.demo.samples import Sample, correct_quarantined, drop_samples, prepare_exchange

__all__ = ["Sample", "correct_quarantined", "drop_samples", "prepare_exchange"]

"""callpush benchmarks and reliability runs: ``python -m bench all`` (see bench/__main__.py)."""

"""Benchmarks, load and fault scripts: `python -m bench.<name> --help` for each; bench/README.md has the
commands and the latest tables. All traffic goes to 127.0.0.1 only, and every loop is bounded in count
and time."""

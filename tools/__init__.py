"""Helpers shared by the tests and the benchmarks (neither imports the other): a gunicorn server on a
throwaway instance, a bounded HTTP load client, a throwaway PostgreSQL, non-X-ray samples and process
measurements."""

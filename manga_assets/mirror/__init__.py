"""A loopback SAS mirror for tests, benchmarks and the demo: the HTTP server and its faults.

``server``: the data.sdss.org-like HTTP server over a local SAS tree; ``transfer_faults``: the
HTTP failures (errors, stalls, resets, lying lengths, truncations) it can inject per request.
Nothing here is used to download real data (that is :mod:`manga_assets.sas`).
"""

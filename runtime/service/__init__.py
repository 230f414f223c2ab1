"""``tseg-rt serve`` (a local HTTP service) and ``tseg-rt watch`` (a hot folder).

Library first, bottom layer first:

* :mod:`~tseg.runtime.service.store` — the persistent job queue (SQLite in the results folder);
* :mod:`~tseg.runtime.service.paths` — which slide paths a request may name (the roots);
* :mod:`~tseg.runtime.service.runner` — worker threads, one per device, each with the engine
  loaded once, running jobs through :func:`tseg.runtime.cohort.runner.run_slide` (the folders,
  locks and resume rules of ``tseg-rt run``);
* :mod:`~tseg.runtime.service.reporter` — keeps the cohort report current while jobs finish;
* :mod:`~tseg.runtime.service.metrics` — Prometheus text metrics;
* :mod:`~tseg.runtime.service.core` — :class:`~tseg.runtime.service.core.Service`, what a running
  service holds (results-folder lock, store, runner, hot folders) and the operations the HTTP API
  exposes (submit, status, cancel, results, health);
* :mod:`~tseg.runtime.service.watch` — the hot folder (polling);
* :mod:`~tseg.runtime.service.app` with ``routers/``, ``schemas``, ``problems`` and ``access`` —
  the HTTP layer (FastAPI), thin over :class:`~tseg.runtime.service.core.Service`;
* :mod:`~tseg.runtime.service.server` — runs it all (uvicorn, signals, the service file).

FastAPI and uvicorn are imported only by the HTTP layer and the server.
"""

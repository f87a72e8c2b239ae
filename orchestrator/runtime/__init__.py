"""The production runtime: configuration, the work functions that drive the engine against the
store, the dispatcher that hands work to Celery (or runs it inline in embedded mode), the timer
pump, the Celery app and the ingest API. Shell."""

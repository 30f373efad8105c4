"""The REST API (``/v1``): thin routes over the service modules; see docs/api.md."""

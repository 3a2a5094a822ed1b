"""Observability: one metric scheme, one way to serve ``/metrics`` and ``/healthz``, one port registry.

* :mod:`.ports` - ``metrics_port(settings, component, index)``: the only place that
  assigns metrics ports; components bind it and the Prometheus config scrapes it.
* :mod:`.server` - :class:`~.server.MetricsServer`, the one HTTP server every
  long-running component (gateway, stream processes, hot store, platform exporter,
  Dagster exporter) serves its registry and health document with.
* :mod:`.scheme` - the naming rules as code (the test suite checks every registry).
* :mod:`.exporter` - the platform exporter: consumer lag from the flows' own recovery
  offsets against the log end, state-directory disk usage, per-service up gauges.
* :mod:`.prometheus_config` - the scrape configuration generated from the port registry;
  ``prometheus/`` ships the alert rules (with promtool tests) and an Alertmanager example,
  ``grafana/`` the dashboards and their provisioning files.

The scheme itself is written down in ``docs/observability.md``.
"""

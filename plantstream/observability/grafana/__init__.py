"""Grafana dashboards as code (``*.json``) and their provisioning files (``datasources.yaml``,
``dashboards.yaml``), shipped in the wheel.  Data only; see docs/observability.md."""

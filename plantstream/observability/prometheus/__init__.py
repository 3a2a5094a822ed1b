"""Prometheus files shipped in the wheel: alert and recording rules (``rules.yaml``), their
promtool unit tests (``rules_test.yaml``) and an Alertmanager routing example
(``alertmanager.example.yaml``).  Data only; :mod:`plantstream.observability.prometheus_config`
generates the scrape configuration that loads the rules."""

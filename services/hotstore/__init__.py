"""The local hot store: a chDB data directory served over ClickHouse's HTTP interface.

Production talks to a ClickHouse server through ``clickhouse-connect``; locally this
service owns the one chDB data path (chDB lets only one process open it) and answers
the same HTTP requests, so every component uses the same client in both profiles.

Run it with ``python -m plantstream.services.hotstore``.  This package module imports
nothing heavy on purpose: the entry point must set ``TZ=UTC`` before chDB loads.
"""

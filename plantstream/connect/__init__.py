"""The one place each external service is reached from.

Kafka client configs, the hot-store (ClickHouse) client and S3/Delta storage options
are each built here from :class:`plantstream.settings.Settings`, so transport security
and credentials are added once and every component gets them.
"""

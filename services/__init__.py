"""The local platform: embedded stand-ins for production services (``plantstream.services``).

SeaweedFS for S3, Tansu for Kafka, a chDB-backed ClickHouse HTTP service for the hot
store and an MLflow server, each started as a child process with its data and logs
under the one state directory.  Production uses the real services instead; nothing
outside this package knows the difference.
"""

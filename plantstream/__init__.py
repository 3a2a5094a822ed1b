"""PlantStream: an industrial streaming lakehouse (plant -> edge -> Kafka -> stream -> lake -> models)."""

__version__ = "0.1.0"

"""The edge gateway: collects OPC UA / MQTT / Modbus, normalises to the contract, buffers on disk, forwards to Kafka."""

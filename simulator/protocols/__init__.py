"""The simulated plant on the wire: OPC UA server, MQTT publisher, Modbus TCP servers, mosquitto helper."""

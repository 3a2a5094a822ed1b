"""Protocol collectors: a task per machine (OPC UA, Modbus) or broker (MQTT), each reconnecting alone."""

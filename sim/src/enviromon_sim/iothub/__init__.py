"""A local IoT Hub that the real azure-iot-device SDK connects to."""

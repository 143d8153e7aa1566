"""Sensors: a BME680, an Enviro board (BME280 + LTR-559) or a labelled simulated one.

And how to choose one.

The app loop sees only the `Sensor` protocol (enviro_sensor.reading) plus `health` and `close()`
(`MonitoredSensor`); open one with `open_sensor(settings, device_id=...)`.
"""

from enviro_sensor.sensors.bme680 import Bme680Sensor, I2CDevice
from enviro_sensor.sensors.enviro import EnviroSensor
from enviro_sensor.sensors.factory import MonitoredSensor, open_sensor
from enviro_sensor.sensors.health import SensorHealth
from enviro_sensor.sensors.settings import SensorSettings
from enviro_sensor.sensors.simulated import SimulatedSensor

__all__ = [
    "Bme680Sensor",
    "EnviroSensor",
    "I2CDevice",
    "MonitoredSensor",
    "SensorHealth",
    "SensorSettings",
    "SimulatedSensor",
    "open_sensor",
]

"""enviro_sensor: the enviromon IoT Edge module."""

__version__ = "0.1.0"

"""The operator's commands, against the local hub or a real IoT Hub.

``enviromon device``, ``twin``, ``monitor-events``, ``calibrate``, ``load`` and
``dashboard publish``.
"""

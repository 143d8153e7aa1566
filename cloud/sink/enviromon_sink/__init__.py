"""enviromon cloud sink: exactly-once counts, history and live publishing."""

"""The ``mixer-console`` command: the Mixer relay and its operator console."""

"""Inference: the streaming driver, streamed sliding windows, output sinks, ``predict``
and ``evaluate``."""

"""Inference: the streaming driver, streamed sliding windows, output sinks, ``predict``
and ``evaluate``. Output formats are ``writer`` plugins (:mod:`duoseg.core.interfaces.writer`)."""

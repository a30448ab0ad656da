"""The exceptions duoseg raises for bad input, bad plugins and bad configs.

Every message names what was looked at (file, case, key, plugin) and the offending
value, so the one line the CLI prints is enough to fix the problem.
"""

from __future__ import annotations


class DuosegError(Exception):
    """Base class of every error caused by input, configuration or plugins."""


class PluginError(DuosegError):
    """A plugin failed to import, register or answer a hook."""


class DuplicateComponentError(PluginError):
    """Two plugins supplied a component of the same kind and name."""


class UnknownComponentError(DuosegError, KeyError):
    """A kind or component name that no loaded plugin supplies."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ComponentParameterError(DuosegError, TypeError):
    """Parameters that a component's factory does not accept."""


class ConfigError(DuosegError, ValueError):
    """A config file or override with an unknown key or a value of the wrong kind."""


class InputShapeError(DuosegError, ValueError):
    """A tensor whose shape, dtype or size breaks a component's contract."""


class WeightsError(DuosegError, ValueError):
    """A weights file that cannot be read safely or does not fit the network."""


class DataError(DuosegError, ValueError):
    """A source file or cache entry that is missing, malformed or inconsistent."""


class PredictError(DuosegError, ValueError):
    """Bad input to ``duoseg predict`` or ``evaluate``."""


class PackageError(DuosegError, ValueError):
    """A model package that is damaged, unsafe, too new, or needs what is not installed."""

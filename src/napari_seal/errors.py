"""Typed errors raised by napari-seal.

Every error a user can fix is a :class:`SealError`. Its message says what is wrong
and how to fix it. The CLI maps ``SealError`` to exit code 2 with a one-line message,
the napari reader returns ``None`` and widgets show a notification.
"""

from __future__ import annotations

__all__ = [
    "BadInputError",
    "CacheMismatchError",
    "CheckpointError",
    "EncoderMismatchError",
    "GeneQueryError",
    "MppUnknownError",
    "NoTissueError",
    "OutputPathError",
    "SchedulerError",
    "SealError",
    "ShippedModelError",
    "SlideReadError",
    "SpatialDataError",
    "TrainingConfigError",
    "UnknownEncoderError",
    "WeightsError",
]


class SealError(Exception):
    """Base class of every user-fixable error (CLI exit code 2)."""


class BadInputError(SealError, ValueError):
    """An input file, flag or argument is invalid."""


class SlideReadError(BadInputError):
    """A slide image cannot be opened or decoded."""


class MppUnknownError(BadInputError):
    """A slide has no usable pixel size and none was given."""


class SpatialDataError(BadInputError):
    """An ST table (counts, spots, AnnData) violates the data contract."""


class UnknownEncoderError(SealError, KeyError):
    """An encoder name is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsError(SealError):
    """A weight file does not fit the architecture or cannot be read safely."""


class CheckpointError(WeightsError):
    """A SEAL checkpoint or run directory is incomplete or inconsistent."""


class ShippedModelError(CheckpointError):
    """The SEAL model shipped with the package is missing or damaged."""


class EncoderMismatchError(BadInputError):
    """An encoder's tile geometry does not fit the slide or the store."""


class CacheMismatchError(SealError):
    """An existing cache or store was made from other inputs (names the key)."""


class OutputPathError(SealError, OSError):
    """An output path cannot be written (permissions, full disk, exists)."""


class GeneQueryError(BadInputError):
    """A gene or signature query cannot be resolved against the run's panel."""


class TrainingConfigError(BadInputError):
    """Training inputs or configuration cannot work (too few spots, bad preset...)."""


class SchedulerError(SealError):
    """A dask.distributed scheduler does not answer or was lost mid-run."""


class NoTissueError(BadInputError):
    """No tissue was found on a slide (the message says how to lower the threshold)."""

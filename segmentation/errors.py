"""Errors the jobs report to the user as one clear line."""

from __future__ import annotations


class SegmentationError(Exception):
    """A problem with the user's input or options.

    The command line prints ``error: <message>`` on one line and exits with status 2; nothing is
    written to the output location. Anything else that escapes is a bug and keeps its traceback.
    """


class InputError(SegmentationError):
    """The input is missing, unreadable, or lacks the columns a source needs."""


class EmptyResultError(SegmentationError):
    """Nothing is left to segment after cleaning and filtering."""


class OutputExistsError(SegmentationError):
    """The output location already holds files and ``--overwrite`` was not given."""


class StorageError(SegmentationError):
    """A location cannot be used: missing bucket, denied access, no credentials, no S3 support."""

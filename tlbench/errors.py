"""User-facing errors: the library raises one of these with a one-line message, the CLI prints it."""

from __future__ import annotations


class TLBenchError(Exception):
    """Base class: an error the user can fix from the message alone (bad input, missing data)."""


class ConfigError(TLBenchError):
    """Bad model name, position, token count, image size, sweep file or override."""


class DataError(TLBenchError):
    """A missing data folder, an unknown dataset, too few images per class."""


class ResultsError(TLBenchError):
    """A corrupt or inconsistent results file."""


class FlopCountError(TLBenchError):
    """fvcore met an operator that has no handle and is not on the counted-as-zero list."""


class SubmissionError(TLBenchError):
    """The scheduler refused jobs (sbatch failed), or there is no scheduler to submit to."""

"""Failure reasons the trainer reports, each with the exit code the operator acts on.

Exit code 2 means "bad input": the operator treats it as permanent and does not
retry. 3 means the loss diverged (retrying with the same hyper-parameters would
diverge again). 143 follows the SIGTERM convention after a checkpoint was
committed. Anything else is a retryable error.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 143

REASONS = (
    "Completed", "LossDiverged", "InvalidDataset", "InvalidModel", "InvalidConfig",
    "CheckpointFailed", "Interrupted", "PeerLost", "Error",
)


class TrainerError(Exception):
    """An expected failure: reported as one line, never as a traceback."""

    reason = "Error"
    exit_code = EXIT_ERROR

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidConfig(TrainerError):
    reason = "InvalidConfig"
    exit_code = EXIT_BAD_INPUT


class InvalidDataset(TrainerError):
    reason = "InvalidDataset"
    exit_code = EXIT_BAD_INPUT


class InvalidModel(TrainerError):
    reason = "InvalidModel"
    exit_code = EXIT_BAD_INPUT


class LossDiverged(TrainerError):
    reason = "LossDiverged"
    exit_code = EXIT_DIVERGED


class CheckpointFailed(TrainerError):
    reason = "CheckpointFailed"
    exit_code = EXIT_ERROR


class Interrupted(TrainerError):
    reason = "Interrupted"
    exit_code = EXIT_INTERRUPTED

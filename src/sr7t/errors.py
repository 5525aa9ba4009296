"""Errors that name the subject and file they are about."""


class ScanError(ValueError):
    """A scan that cannot be used: unreadable, not 3-D, non-finite, empty, absurd spacing.

    The message always names the subject and the file, so a user reading a log of many
    parallel jobs knows at once which input to fix.
    """

    def __init__(self, subject: str, path: str, problem: str):
        self.subject = subject
        self.path = str(path)
        self.problem = problem
        super().__init__(f"subject {subject}: {path}: {problem}")


class StageNotReady(RuntimeError):
    """Raised by a stage that is not implemented for the requested option yet."""


class TrainingOOM(RuntimeError):
    """The GPU ran out of memory in a training step; the message says which batch size to try."""


class InferenceOOM(RuntimeError):
    """The GPU ran out of memory predicting even one plane at a time; the message says what
    to try."""


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA out-of-memory error (also as the plain RuntimeError older code paths raise)."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


class RegistrationDiverged(RuntimeError):
    """A registration ended less similar than it started; the message names subject and files."""


# Errors whose message is written for the user (a bad scan, config or model file, advice after
# running out of GPU memory, a failed registration): a stage shows them as one line.
USER_ERRORS = (ValueError, TrainingOOM, InferenceOOM, RegistrationDiverged)

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

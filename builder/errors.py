"""The one error type users see, and the exit codes the CLI maps it to."""

from __future__ import annotations

# Exit codes, kept apart so scripts can tell bad input from a broken host.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INVALID = 3
EXIT_PREREQ = 4
EXIT_TIMEOUT = 5


class StackseedError(Exception):
    """An error with a sentence for the user and, where there is one, the fix."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, fix: str | None = None, log: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.log = log

    def __str__(self) -> str:
        parts = [self.message]
        if self.fix:
            parts.append(f"fix: {self.fix}")
        if self.log:
            parts.append(f"log: {self.log}")
        return "\n".join(parts)


class TopologyError(StackseedError):
    exit_code = EXIT_INVALID


class UsageError(StackseedError):
    exit_code = EXIT_USAGE


class PathError(UsageError):
    """A path given on the command line (or by its environment variable) that cannot work."""


class PrerequisiteError(StackseedError):
    exit_code = EXIT_PREREQ


class WaitTimeout(StackseedError):
    exit_code = EXIT_TIMEOUT

"""One error type for everything a user can get wrong.

The CLI turns an ``EdgekdError`` into one message (problem + fix) and exit code 2, so a user never
sees a traceback from deep inside a library for a mistake of their own.
"""

from __future__ import annotations


class EdgekdError(Exception):
    """A problem the user can fix: ``problem`` says what is wrong, ``fix`` what to do about it."""

    exit_code = 2

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem}\n  fix: {fix}")


class MissingDependencyError(EdgekdError):
    """An optional runtime or converter is not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the package '{package}', which is not installed",
            f"pip install 'edgekd[{extra}]'",
        )


class ContractError(EdgekdError):
    """An artifact was built but breaks a contract (parity, accuracy): it must not ship."""

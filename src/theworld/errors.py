"""Errors a user can fix (bad config key, missing file, unreadable sample).

The CLI prints these as one clear message and exits non-zero without a traceback; anything else
is a bug and keeps its traceback.
"""


class TheWorldUserError(Exception):
    """An error caused by the user's input; the message names the offending key, file or sample."""


class ConfigFieldError(TheWorldUserError):
    """A bad field of a settings dataclass; `field_name` lets a CLI name its own flag instead."""

    prefix = ""

    def __init__(self, field_name: str, detail: str) -> None:
        super().__init__(f"{self.prefix}{field_name}: {detail}")
        self.field_name = field_name
        self.detail = detail

    def for_flags(self, flags: dict[str, str]) -> TheWorldUserError:
        """The same error naming the command-line flag that set the field (itself when none did)."""
        if self.field_name not in flags:
            return self
        return TheWorldUserError(f"{flags[self.field_name]}: {self.detail}")

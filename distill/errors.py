"""The one error type for bad input: it names the file, the key and the line it is about.

The CLI turns it into a single line on stderr and exit code 2; anything else is a failure
during the run (exit code 1).
"""

from __future__ import annotations


class InputError(Exception):
    def __init__(self, message: str, *, file: str | None = None, key: str | None = None,
                 line: int | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.key = key
        self.line = line

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # Pickled whole (from a worker process to its parent): the keywords survive.
        return (_rebuild, (self.message, self.file, self.key, self.line))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = str(self.file) + (f":{self.line}" if self.line else "") + ": "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"


def _rebuild(message: str, file: str | None, key: str | None, line: int | None) -> InputError:
    return InputError(message, file=file, key=key, line=line)

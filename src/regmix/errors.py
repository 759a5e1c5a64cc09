"""The one exception type that reaches users as a single line instead of a traceback."""


class RegmixError(Exception):
    """Bad input or configuration: the message names the file/key and what was expected."""

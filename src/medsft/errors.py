"""Errors a user can cause. The CLI prints them as one line and exits with `exit_code`."""


class UserError(Exception):
    """A problem with the user's input (recipe, file, model path): one line, no traceback."""

    exit_code = 2


class BadRecordError(UserError):
    """A malformed data record met with `on_bad_record: fail`."""

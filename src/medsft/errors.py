"""Errors a user can cause. The CLI prints them as one line and exits with `exit_code`."""


class UserError(Exception):
    """A problem with the user's input (recipe, file, model path): one line, no traceback."""

    exit_code = 2


class BadRecordError(UserError):
    """A malformed data record met with `on_bad_record: fail`."""


class TrainingStopped(UserError):
    """Training could not go on (a non-finite loss or gradient): one line saying where, exit code 3."""

    exit_code = 3

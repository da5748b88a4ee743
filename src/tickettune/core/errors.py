"""The one exception type a user can cause: its message is the single line the CLI prints (exit code 2) and
the service answers (a 4xx)."""


class UserError(Exception):
    """A problem the user can fix. The message is one line: what is wrong, then how to fix it."""

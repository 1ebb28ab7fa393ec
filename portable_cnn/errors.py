"""The one exception type users see: its message is printed as a single line by the CLI."""


class UserError(Exception):
    """Bad input or a missing resource, with a message that says what is wrong and what to do."""

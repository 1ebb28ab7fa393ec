"""The one exception type users see (printed as a single line by the CLI) and the one way to word a cause."""


class UserError(Exception):
    """Bad input or a missing resource, with a message that says what is wrong and what to do."""


def reason(error: BaseException) -> str:
    """An exception as one line for a UserError message (a plain URLError's cause is in ``.reason``)."""
    cause = getattr(error, "reason", None) if type(error).__name__ == "URLError" else None
    text = " ".join(str(cause if cause is not None else error).split()).strip("'\"")
    return text or type(error).__name__

"""One exception type for every user-facing mistake: the CLI prints its message as one line."""


class LeannetError(Exception):
    """A problem with the user's input (config, data, checkpoint, name) and how to fix it.

    The message is a single line that says what is wrong and what to do about it.
    """

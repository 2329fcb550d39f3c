"""One exception type for every user-facing mistake: the CLI prints its message as one line."""


class LeannetError(Exception):
    """A problem with the user's input (config, data, checkpoint, name) and how to fix it.

    The message is a single line that says what is wrong and what to do about it.
    """


class RunInterrupted(LeannetError):
    """A run stopped by SIGINT or SIGTERM; its last checkpoint is kept and `resume_command` continues it."""

    def __init__(self, where: str, resume_command: str, exit_code: int = 130) -> None:
        super().__init__(f"{where} was interrupted; its last checkpoint is kept; resume with `{resume_command}`")
        self.where = where
        self.resume_command = resume_command
        self.exit_code = exit_code

"""One exception type for every user-facing mistake: the CLI prints its message as one line."""


class LeannetError(Exception):
    """A problem with the user's input (config, data, checkpoint, name) and how to fix it.

    The message is a single line that says what is wrong and what to do about it.
    """


class RunInterrupted(LeannetError):
    """A run stopped by SIGINT or SIGTERM; `resume_command` continues it (or starts it again when no checkpoint
    was written yet: `kept` is False)."""

    def __init__(self, where: str, resume_command: str, exit_code: int = 130, kept: bool = True) -> None:
        state = ("; its last checkpoint is kept; resume with" if kept
                 else " before its first checkpoint, so there is nothing to resume; start it again with")
        super().__init__(f"{where} was interrupted{state} `{resume_command}`")
        self.where = where
        self.resume_command = resume_command
        self.exit_code = exit_code
        self.kept = kept

"""The errors `python -m aft.head` reports as one clean message and a non-zero exit."""


class HeadError(Exception):
    """A problem the user can fix (data, bundle, output directory, flags); the message says
    where (file and line) and what."""


class DataError(HeadError):
    """The training data is unreadable or unusable; the message names the file and line."""

    def __init__(self, problems: list[str] | str, path=None, total: int | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        shown = self.problems[:MAX_SHOWN]
        more = (total or len(self.problems)) - len(shown)
        lines = shown + ([f"... and {more} more"] if more > 0 else [])
        if len(lines) == 1:
            msg = lines[0]
        else:
            head = f"{path}: {total or len(self.problems)} problems" if path else "problems"
            msg = head + ":\n" + "\n".join("  " + p for p in lines)
        super().__init__(msg)


MAX_SHOWN = 10

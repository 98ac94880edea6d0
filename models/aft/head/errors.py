"""The errors `python -m aft.head` reports as one clean message and a non-zero exit."""

MAX_SHOWN = 10  # problems listed in one message; the rest are counted


class HeadError(Exception):
    """A problem the user can fix (data, bundle, output directory, flags); the message says
    where (file and line) and what."""


class DataError(HeadError):
    """The training data is unreadable or unusable; the message names the file and line."""

    def __init__(self, problems: list[str] | str, path=None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        lines = self.problems[:MAX_SHOWN]
        if len(self.problems) > MAX_SHOWN:
            lines.append(f"... and {len(self.problems) - MAX_SHOWN} more")
        if len(self.problems) == 1:
            msg = lines[0]
        else:
            head = f"{path}: {len(self.problems)} problems" if path else "problems"
            msg = head + ":\n" + "\n".join("  " + p for p in lines)
        super().__init__(msg)

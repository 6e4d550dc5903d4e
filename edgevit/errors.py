"""One exception type for problems the user can fix: the CLI prints it as one line and exits 2."""


class EdgevitError(Exception):
    """Bad input or an unmet requirement. The message names the problem and the fix."""

"""One exception type for problems the user can fix: the CLI prints it as one line and exits 2."""

from __future__ import annotations


class EdgevitError(Exception):
    """Bad input or an unmet requirement. The message names the problem and the fix.

    `param` names the stage function's parameter at fault, when one is (a tuple when two are): the
    message uses that name, and the CLI shows the flag that sets it instead (`lr` -> `--lr`), since a
    CLI user typed a flag.
    """

    def __init__(self, message: str, param: str | tuple[str, ...] | None = None):
        super().__init__(message)
        self.param = param

    @property
    def params(self) -> tuple[str, ...]:
        return () if self.param is None else (self.param,) if isinstance(self.param, str) else tuple(self.param)

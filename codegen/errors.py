"""Exception types shared by the compiler stages and the CLI."""
from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input; the CLI prints it on one line and exits non-zero."""

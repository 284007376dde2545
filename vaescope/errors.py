"""One error type for everything that arrives from outside: files, uploads, request values, flags.

Every refusal is an ``InputError`` (or a subclass naming where it came from). Its message is written
for the person who sent the input: what was wrong and what to do. The command lines print it as one
line; the explorer shows it on the page. Nothing else from outside reaches the user as a traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Something from outside was refused; ``str(error)`` is the message for the user."""

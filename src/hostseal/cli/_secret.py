"""Reading a secret (a recovery key, a password) that the operator types or pipes in.

At a terminal: a prompt that does not echo (and asks twice when ``confirm``). From a pipe
(``echo KEY | hostseal ...``): the first line of standard input, without a prompt, a second line
or getpass's "may be echoed" warning -- there is no terminal whose echo could be turned off.
"""

from __future__ import annotations

import sys

import click


def read_secret(prompt: str, *, confirm: bool = False) -> str:
    """The secret, from a no-echo prompt at a terminal or the first line of piped stdin."""
    if sys.stdin.isatty():
        text: str = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
        return text
    line = sys.stdin.readline()
    if not line:
        raise click.UsageError(f"{prompt}: standard input is empty; pipe the value in or type it.")
    return line.rstrip("\r\n")

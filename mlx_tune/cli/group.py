"""The click group class every ``mlx-tune`` group uses: a ``UserError`` raised by a command becomes
one ``Error:`` line and exit code 1, with no traceback. Kept apart so the command modules
(``cli.data``, ``cli.model``, ``cli.bench``) and ``cli`` can share it without importing each other."""

from __future__ import annotations

import click

from mlx_tune import UserError


class Group(click.Group):
    """A click group that reports a ``UserError`` as a click error (one line, exit code 1)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise click.ClickException(str(e)) from None

"""Shared pieces of the CLI: the per-invocation context and output helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import click

from hostseal.settings import Settings


@dataclass
class AppContext:
    settings: Settings


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def settings_of(ctx: click.Context) -> Settings:
    obj = ctx.find_object(AppContext)
    if obj is None:  # invoked without the root group (tests calling a sub-command directly)
        return Settings.from_env()
    return obj.settings


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))

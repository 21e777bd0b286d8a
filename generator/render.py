"""Jinja2 rendering for emitters: templates hold layout, emitters compute the values."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

import topo.templates

TEMPLATES_DIR = Path(topo.templates.__file__).parent


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["tojson"] = lambda value: json.dumps(value, sort_keys=True)
    return env


def render(template: str, **values: Any) -> str:
    return environment().get_template(template).render(**values)

"""Type checks of a config dataclass's fields against their defaults (errors name the field)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .checks import is_int, is_number


def check_fields(obj, nullable: frozenset[str] | set[str] = frozenset()) -> None:
    """Dataclass fields keep the type of their default (ints accepted for floats, YAML's "1e-3" strings read as
    floats, tuples of ints/floats/strings by annotation); ``nullable`` fields may be None. Errors name the field."""
    for f in dataclasses.fields(obj):
        if f.default is dataclasses.MISSING:
            continue
        value, default = getattr(obj, f.name), f.default
        if value is None and f.name in nullable:
            continue
        if isinstance(value, np.generic):  # a numpy scalar is stored as the Python scalar it holds
            value = value.item()
            setattr(obj, f.name, value)
        if default is None and str(f.type).startswith("int"):
            ok, kind = value is None or is_int(value), "an int or null"
        elif default is None and str(f.type).startswith("str"):
            ok, kind = value is None or isinstance(value, str), "a string or null"
        elif default is None:
            ok = value is None or (is_number(value) and math.isfinite(value))
            kind = "a finite number or null"
        elif isinstance(default, bool):
            ok, kind = isinstance(value, bool), "a bool"
        elif isinstance(default, int):
            ok, kind = is_int(value), "an int"
        elif isinstance(default, float):
            if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
                try:
                    value = float(value)
                except ValueError:
                    pass
            ok, kind = is_number(value) and math.isfinite(value), "a finite number"
            if ok:
                setattr(obj, f.name, float(value))
        elif isinstance(default, str):
            ok, kind = isinstance(value, str), "a string"
        elif isinstance(default, tuple) and "str" in str(f.type):
            ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
            kind = "a list of strings"
        elif isinstance(default, tuple) and "float" in str(f.type):
            ok = isinstance(value, (list, tuple)) and all(is_number(v) and math.isfinite(v) for v in value)
            kind = "a list of finite numbers"
        elif isinstance(default, tuple):
            ok = isinstance(value, (list, tuple)) and all(is_int(v) for v in value)
            kind = "a list of ints"
        else:
            continue
        if not ok:
            raise TypeError(f"`{f.name}` must be {kind}, got {value!r}")

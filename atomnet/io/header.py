"""Validation of a model file's JSON header, before anything is built or allocated.

The header is untrusted input: :func:`parse_header` bounds its size and nesting
depth before ``json.loads`` sees it, and :func:`validate_header` checks every
field, raising :class:`ModelFileError` that names the field, e.g.
``model.atomnet: header field 'potential.terms[1].hidden' must be a list of
positive integers (each ≤ 65536), got 'abc'``.

These are small plain functions rather than a schema library (pydantic,
jsonschema): the checks are domain checks (element symbols, the exact model
units, option bounds per term type, names that must be unique across stages and
terms) that a generic schema would express poorly, and it keeps atomnet's
dependencies minimal. Checks against the weights (tensor names, shapes and
dtypes) need the recipe built on the meta device; they live in
:mod:`atomnet.io.model_file`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from ase.data import chemical_symbols

from .. import units
from ..errors import AtomnetError

FORMAT = "atomnet-model/1"

#: the largest atomnet header accepted (characters of JSON)
MAX_HEADER_CHARS = 16 * 2**20
#: the deepest nesting of JSON arrays/objects accepted in the header
MAX_DEPTH = 32
#: at most this many stages plus energy terms
MAX_PARTS = 64
#: the widest hidden layer accepted
MAX_WIDTH = 65536
#: the most hidden layers accepted
MAX_LAYERS = 64
#: bound on per-type counts such as ``n_radial``
MAX_COUNT = 1024
#: the longest cutoff accepted (Å)
MAX_CUTOFF = 100.0
#: the most values (parameters and buffers) a model may hold, checked on the meta device
MAX_VALUES = 200_000_000

_TOP_REQUIRED = ("format", "atomnet_version", "elements", "cutoff", "units", "potential")
_TOP_OPTIONAL = ("info",)
_RECIPE_KEYS = ("elements", "stages", "terms")
_E0S_HINT = "E0s are stored only in the e0 tensor (one source of truth), never in the header"
_SYMBOLS = frozenset(chemical_symbols[1:])


class ModelFileError(AtomnetError, ValueError):
    """A model file is missing, malformed or incompatible."""


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


class _Checker:
    """Raises :class:`ModelFileError` prefixed with the file name (``src``)."""

    def __init__(self, src: str):
        self.src = src

    def fail(self, field: str, message: str) -> None:
        raise ModelFileError(f"{self.src}: header field '{field}' {message}")

    def wrong(self, field: str, what: str, value: Any) -> None:
        self.fail(field, f"must be {what}, got {_show(value)}")

    def object(self, field: str, value: Any, required=(), optional=(), hints=None) -> dict:
        if not isinstance(value, dict):
            self.wrong(field, "a JSON object", value)
        for key in required:
            if key not in value:
                self.fail(_field(field, key), "is missing")
        allowed = set(required) | set(optional)
        for key in value:
            if key not in allowed:
                hint = (hints or {}).get(key, f"allowed: {sorted(allowed)}")
                self.fail(_field(field, key), f"is not a known field ({hint})")
        return value

    def number(self, field: str, value: Any, low: float, high: float, low_open: bool = True):
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value) and value <= high
              and (value > low if low_open else value >= low))
        if not ok:
            bound = f"> {low:g}" if low_open else f"≥ {low:g}"
            self.wrong(field, f"a finite number {bound} and ≤ {high:g}", value)
        return value

    def integer(self, field: str, value: Any, low: int, high: int) -> int:
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            self.wrong(field, f"an integer from {low} to {high}", value)
        return value

    def string(self, field: str, value: Any, choices=None, max_len: int = 200) -> str:
        if not isinstance(value, str) or not 0 < len(value) <= max_len:
            self.wrong(field, f"a non-empty string (≤ {max_len} characters)", value)
        if choices is not None and value not in choices:
            self.wrong(field, f"one of {sorted(choices)}", value)
        return value

    def elements(self, field: str, value: Any) -> list[str]:
        if not isinstance(value, list) or not value:
            self.wrong(field, "a non-empty list of element symbols", value)
        for k, symbol in enumerate(value):
            if not isinstance(symbol, str) or symbol not in _SYMBOLS:
                self.wrong(_field(field, k), "an element symbol", symbol)
        if len(set(value)) != len(value):
            self.wrong(field, "a list of distinct element symbols", value)
        return value


# --- options of the built-in term types --------------------------------------
def _check_bpnn(c: _Checker, field: str, options: dict) -> None:
    from ..descriptors.cutoff import CUTOFFS
    from ..nn.element_mlp import ACTIVATIONS

    for key in ("cutoff", "angular_cutoff"):
        if key in options:
            c.number(_field(field, key), options[key], 0.0, MAX_CUTOFF)
    for key in ("n_radial", "n_angular_radial", "n_angle_sections"):
        if key in options:
            c.integer(_field(field, key), options[key], 1, MAX_COUNT)
    if "zeta" in options:
        c.number(_field(field, "zeta"), options["zeta"], 0.0, 1e4)
    if "hidden" in options:
        hidden = options["hidden"]
        ok = isinstance(hidden, list) and len(hidden) <= MAX_LAYERS and all(
            isinstance(h, int) and not isinstance(h, bool) and 0 < h <= MAX_WIDTH
            for h in hidden
        )
        if not ok:
            c.wrong(_field(field, "hidden"),
                    f"a list of positive integers (each ≤ {MAX_WIDTH}, at most "
                    f"{MAX_LAYERS} layers)", hidden)
    if "activation" in options:
        c.string(_field(field, "activation"), options["activation"], ACTIVATIONS)
    if "cutoff_fn" in options:
        c.string(_field(field, "cutoff_fn"), options["cutoff_fn"], CUTOFFS)


def _check_atomic_reference(c: _Checker, field: str, options: dict) -> None:
    if "e0s" in options:
        c.fail(_field(field, "e0s"), f"is not allowed: {_E0S_HINT}")


def _check_fixed_charges(c: _Checker, field: str, options: dict) -> None:
    if "charges" in options:
        charges = options["charges"]
        if not isinstance(charges, dict):
            c.wrong(_field(field, "charges"), "a JSON object {symbol: charge in e}", charges)
        for symbol, q in charges.items():
            c.number(_field(_field(field, "charges"), symbol), q, -100.0, 100.0, low_open=False)


def _check_equivariant(c: _Checker, field: str, options: dict) -> None:
    """Bounds that keep a CPU build of the recipe small (e3nn cannot build on meta)."""
    from ..models.equivariant import PRESETS

    if "cutoff" in options:
        c.number(_field(field, "cutoff"), options["cutoff"], 0.0, MAX_CUTOFF)
    if "size" in options:
        c.string(_field(field, "size"), options["size"], PRESETS)
    bounds = {"channels": (1, 512), "l_max": (0, 3), "sh_l_max": (1, 4),
              "correlation": (1, 4), "layers": (1, 8), "num_radial": (1, 64)}
    for key, (low, high) in bounds.items():
        if key in options:
            c.integer(_field(field, key), options[key], low, high)
    if "radial_mlp" in options:
        widths = options["radial_mlp"]
        ok = isinstance(widths, list) and len(widths) <= 8 and all(
            isinstance(h, int) and not isinstance(h, bool) and 0 < h <= 1024
            for h in widths)
        if not ok:
            c.wrong(_field(field, "radial_mlp"),
                    "a list of positive integers (each ≤ 1024, at most 8 layers)", widths)


#: type name → checks of its options (types without an entry get the generic checks:
#: known option names, then a build on the meta device whose errors are reported)
OPTION_CHECKS: dict[str, Callable[[_Checker, str, dict], None]] = {
    "bpnn": _check_bpnn,
    "equivariant": _check_equivariant,
    "atomic_reference": _check_atomic_reference,
    "fixed_charges": _check_fixed_charges,
}


# --- parsing ----------------------------------------------------------------
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def nesting_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in JSON ``text`` (brackets inside strings ignored)."""
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text)).encode("ascii")
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_header(text: Any, src: str) -> dict:
    """The header JSON ``text`` as a dict; bounded in size and depth, duplicate keys refused."""
    if not isinstance(text, str):
        raise ModelFileError(f"{src}: corrupt atomnet header (not a string)")
    if len(text) > MAX_HEADER_CHARS:
        raise ModelFileError(
            f"{src}: atomnet header too large ({len(text)} characters; at most {MAX_HEADER_CHARS})"
        )
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise ModelFileError(
            f"{src}: corrupt atomnet header (nested {depth} levels deep; at most {MAX_DEPTH})"
        )
    try:
        header = json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ModelFileError(f"{src}: corrupt atomnet header (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, duplicate keys, integers of > 4300 digits
        raise ModelFileError(f"{src}: corrupt atomnet header ({exc})") from exc
    if not isinstance(header, dict):
        raise ModelFileError(
            f"{src}: corrupt atomnet header (a JSON {type(header).__name__}, not an object)"
        )
    return header


# --- validation -------------------------------------------------------------
def validate_header(header: dict, src: str) -> dict:
    """Check every field of a parsed header; returns it unchanged or raises :class:`ModelFileError`.

    Checks: the format string; required and unknown fields (``e0s`` is refused:
    E0s live in the ``e0`` tensor only); ``elements`` (known, distinct symbols);
    ``cutoff`` (finite, 0 ≤ cutoff ≤ 100 Å); ``units`` exactly
    :data:`atomnet.units.MODEL_UNITS`; the recipe (its elements equal the header's,
    parts are objects with a unique ``name`` and a registered ``type``, options
    known to the type and, for built-in types, within bounds).
    """
    c = _Checker(src)
    if not isinstance(header, dict):
        c.wrong("", "a JSON object", header)
    if header.get("format") != FORMAT:
        raise ModelFileError(
            f"{src}: unsupported model format {_show(header.get('format'))} (expected {FORMAT})"
        )
    c.object("", header, _TOP_REQUIRED, _TOP_OPTIONAL, hints={"e0s": _E0S_HINT})
    c.string("atomnet_version", header["atomnet_version"])
    elements = c.elements("elements", header["elements"])
    c.number("cutoff", header["cutoff"], 0.0, MAX_CUTOFF, low_open=False)
    c.object("units", header["units"], tuple(units.MODEL_UNITS))
    for key, unit in units.MODEL_UNITS.items():
        if header["units"][key] != unit:
            c.wrong(_field("units", key), repr(unit), header["units"][key])
    if "info" in header and not isinstance(header["info"], dict):
        c.wrong("info", "a JSON object", header["info"])
    validate_recipe(c, header["potential"], elements)
    return header


def validate_recipe(c: _Checker, recipe: Any, elements: list[str]) -> None:
    """Checks of ``potential`` (see :func:`validate_header`)."""
    from ..terms import TERMS, allowed_options

    c.object("potential", recipe, _RECIPE_KEYS, hints={"e0s": _E0S_HINT})
    if recipe["elements"] != elements:
        c.wrong("potential.elements", f"equal to the header's elements {elements}",
                recipe["elements"])
    names: set[str] = set()
    for section in ("stages", "terms"):
        field = f"potential.{section}"
        parts = recipe[section]
        if not isinstance(parts, list) or len(parts) > MAX_PARTS:
            c.wrong(field, f"a list of at most {MAX_PARTS} parts", parts)
        if section == "terms" and not parts:
            c.wrong(field, "a non-empty list (a potential needs an energy term)", parts)
        for k, part in enumerate(parts):
            where = _field(field, k)
            c.object(where, part, ("name", "type"), optional=part if isinstance(part, dict) else ())
            name = c.string(_field(where, "name"), part["name"], max_len=100)
            if "." in name:
                c.wrong(_field(where, "name"), "a name without '.'", name)
            if name in names:
                c.fail(_field(where, "name"), f"repeats the part name {name!r}: names must be "
                       "unique across stages and terms")
            names.add(name)
            kind = c.string(_field(where, "type"), part["type"], TERMS)
            options = {k: v for k, v in part.items() if k not in ("name", "type")}
            allowed = allowed_options(TERMS[kind])
            for key in options:
                if key not in allowed:
                    c.fail(_field(where, key),
                           f"is not an option of type {kind!r} (allowed: {sorted(allowed)})")
            check = OPTION_CHECKS.get(kind)
            if check is not None:
                check(c, where, options)


def first_difference(a: Any, b: Any, field: str) -> tuple[str, Any, Any] | None:
    """(field, value in a, value in b) of the first place where JSON values differ, or None."""
    missing = "<missing>"
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in [*a, *(k for k in b if k not in a)]:
            if key not in a or key not in b:
                return _field(field, key), a.get(key, missing), b.get(key, missing)
            found = first_difference(a[key], b[key], _field(field, key))
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for k, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, _field(field, k))
            if found:
                return found
        return None
    same = a == b and type(a) is type(b) or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b
    )
    return None if same else (field, a, b)

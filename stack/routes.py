"""HTTP trigger routes: ASP.NET route templates, as the Functions host matches them.

    releases/{id}              a segment parameter
    releases/{id:int}          with a constraint: int, long, bool, guid, alpha, min/max/range, length, regex
    files/{name?}              optional (only in the last segments)
    blobs/{*path}              catch-all (the rest of the path, slashes included)
    models/{name=latest}       with a default

Matching is case-insensitive for literals, parameter values are percent-decoded, and among the routes that
match the most specific wins (more literal segments first, catch-alls last), as ASP.NET's route ordering
does. A route whose path matches but not the method is no match: the host answers 404 for it.

Pure. No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from urllib.parse import unquote

T = TypeVar("T")

_PARAM = re.compile(r"\{(\*{1,2})?([A-Za-z_][A-Za-z0-9_]*)((?::[^{}=?]+(?:\([^)]*\))?)*)(\?)?(?:=([^{}]*))?\}")
_CONSTRAINT = re.compile(r":([a-z]+)(?:\(([^)]*)\))?")
_SIMPLE = {
    "int": r"-?\d+", "long": r"-?\d+", "bool": r"(?i:true|false)", "alpha": r"[A-Za-z]+",
    "guid": r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}",
    "datetime": r"[^/]+", "decimal": r"-?\d+(?:\.\d+)?", "double": r"-?\d+(?:\.\d+)?", "float": r"-?\d+(?:\.\d+)?",
}


@dataclass(frozen=True)
class Route(Generic[T]):
    template: str
    methods: frozenset[str]  # empty: any method
    target: T
    pattern: re.Pattern[str] = field(compare=False)
    defaults: dict[str, str] = field(compare=False)
    checks: tuple[tuple[str, str, str], ...] = field(compare=False)  # (param, constraint, argument)
    rank: tuple[int, int, int] = field(compare=False)

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        values = {k: unquote(v) for k, v in found.groupdict().items() if v is not None}
        for name, constraint, argument in self.checks:
            if name in values and not _passes(values[name], constraint, argument):
                return None
        return {**self.defaults, **values}


def compile_route(template: str, methods: Iterable[str], target: T) -> Route[T]:
    """A route template -> Route; ValueError for a template or constraint the host would refuse."""
    template = template.strip("/")
    parts, checks, defaults = [], [], {}
    literals = params = catch_all = 0
    segments = template.split("/") if template else []
    for index, segment in enumerate(segments):
        regex, position = "", 0
        optional_segment = False
        for match in _PARAM.finditer(segment):
            regex += re.escape(segment[position:match.start()])
            star, name, constraints, optional, default = match.groups()
            is_last = index == len(segments) - 1
            if star:
                if not is_last or match.end() != len(segment):
                    raise ValueError(f"route {template!r}: a catch-all parameter must be last")
                regex += f"(?P<{name}>.*)"
                catch_all += 1
            else:
                body = r"[^/]+"
                for constraint, argument in _CONSTRAINT.findall(constraints or ""):
                    if constraint == "regex":
                        body = f"(?:{argument.removeprefix('^').removesuffix('$')})"
                    elif constraint not in _SIMPLE and constraint not in ("min", "max", "range", "length",
                                                                            "minlength", "maxlength"):
                        raise ValueError(f"route {template!r}: unknown constraint {constraint!r}")
                    checks.append((name, constraint, argument))
                regex += f"(?P<{name}>{body})"
                params += 1
            if optional or star:
                optional_segment = segment == match.group(0)
            if default is not None:
                defaults[name] = default
                optional_segment = segment == match.group(0)
            position = match.end()
        if position == 0 and not _PARAM.search(segment):
            literals += 1
        regex += re.escape(segment[position:])
        parts.append((regex, optional_segment))
    pattern = ""
    for i, (regex, optional) in enumerate(parts):
        piece = ("/" if i else "") + regex
        pattern += f"(?:{piece})?" if optional else piece
    return Route(template=template, methods=frozenset(m.upper() for m in methods), target=target,
                 pattern=re.compile(pattern, re.IGNORECASE | re.DOTALL), defaults=defaults, checks=tuple(checks),
                 rank=(-literals, catch_all, params))


class Router(Generic[T]):
    """Routes in match order; `find(method, path)` -> (target, route params) or None."""

    def __init__(self, routes: Iterable[Route[T]]) -> None:
        self.routes = sorted(routes, key=lambda r: r.rank)

    def find(self, method: str, path: str) -> tuple[T, dict[str, str]] | None:
        path = path.strip("/")
        for route in self.routes:
            if route.methods and method.upper() not in route.methods:
                continue
            values = route.match(path)
            if values is not None:
                return route.target, values
        return None


def _passes(value: str, constraint: str, argument: str) -> bool:
    if constraint in _SIMPLE:
        return re.fullmatch(_SIMPLE[constraint], value) is not None
    if constraint == "regex":
        return True  # already in the pattern
    numbers = [a.strip() for a in argument.split(",")] if argument else []
    try:
        if constraint in ("min", "max", "range"):
            number = int(value)
            low = int(numbers[0]) if constraint in ("min", "range") else None
            high = int(numbers[-1]) if constraint in ("max", "range") else None
            return (low is None or number >= low) and (high is None or number <= high)
        if constraint in ("length", "minlength", "maxlength"):
            bounds = [int(n) for n in numbers]
            if constraint == "minlength":
                return len(value) >= bounds[0]
            if constraint == "maxlength":
                return len(value) <= bounds[0]
            return bounds[0] <= len(value) <= bounds[-1] if len(bounds) == 2 else len(value) == bounds[0]
    except ValueError:
        return False
    return False

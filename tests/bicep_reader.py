"""Reads infra/bicep for the structural tests (tests/unit/test_bicep_*.py), without a Bicep compiler: none
installs on these machines (the Bicep CLI is a .NET binary fetched from GitHub, and no PyPI or npm package
ships it). pycep-parser (PyPI, a Lark grammar of Bicep) parses each file into a dict of parameters, variables,
resources, modules and outputs; identifiers come back as `BicepElement` (a str), string literals as plain str,
interpolations as the raw `'...${expr}...'` text. The helpers here follow references through that: which
symbols an expression uses, `a.b.c` chains, objects built with union() and passed through a module parameter.

Also what the code reads: the settings of shared/settings.py and the binding expressions, connections and
Event Grid triggers of functions/.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycep import BicepParser
from pycep.models import BicepElement

ROOT = Path(__file__).resolve().parents[1]
BICEP = ROOT / "infra" / "bicep"
MAIN = BICEP / "main.bicep"


# -- the templates ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Template:
    path: Path
    doc: dict[str, Any]

    def section(self, name: str) -> dict[str, Any]:
        return self.doc.get(name) or {}

    @property
    def params(self) -> dict[str, Any]:
        return self.section("parameters")

    def resource(self, symbol: str) -> dict[str, Any]:
        return self.section("resources")[symbol]

    def resources_of(self, rtype: str) -> dict[str, dict[str, Any]]:
        return {s: r for s, r in self.section("resources").items() if r["type"] == rtype}

    def module(self, symbol: str) -> tuple[dict[str, Any], Template]:
        module = self.section("modules")[symbol]
        return body(module), template(self.path.parent / module["detail"]["path"])


@functools.cache
def parser() -> BicepParser:
    return BicepParser()


@functools.cache
def template(path: Path) -> Template:
    return Template(path.resolve(), parser().parse(file_path=path))


def all_templates() -> list[Template]:
    return [template(p) for p in sorted(BICEP.rglob("*.bicep"))]


def body(element: dict[str, Any]) -> dict[str, Any]:
    """A resource's or module's properties, past its `if (...)` condition or `for` loop."""
    config = element.get("config", element)
    while isinstance(config, dict) and ("condition" in config or "loop_type" in config) and "config" in config:
        config = config["config"]
    return config


_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")
_TOKEN = re.compile(r"(?<![\w.'])([A-Za-z_]\w*)\b(?!\s*\()")  # a name, not a member or a function


def refs(value: Any) -> Iterator[str]:
    """Every symbol (parameter, variable, resource, module, loop item) an expression refers to."""
    if isinstance(value, BicepElement):
        yield str(value)
    elif isinstance(value, str):
        for inner in _INTERPOLATION.findall(value):
            yield from (m for m in _TOKEN.findall(re.sub(r"'[^']*'", "''", inner)))
    elif isinstance(value, dict):
        if value.get("type") == "lambda_expression":  # `x => ...`: x is the lambda's own, not a symbol
            own = {str(v) for k, v in value["detail"].items() if k.startswith("var_")}
            yield from (name for name in refs(value["detail"]["expression"]) if name not in own)
            return
        operator = value.get("operator")
        if isinstance(operator, dict) and operator.get("type") == "property_accessor":
            yield from refs(operator["operands"]["operand_1"])
            yield from _member_refs(operator["operands"]["operand_2"])
            return
        for key, item in value.items():
            if key == "detail" and isinstance(item, dict) and "array_name" in item:
                yield str(item["array_name"])
            else:
                yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


def _member_refs(value: Any) -> Iterator[str]:
    """The right of a `.`: member names are not symbols, but an index inside may be."""
    if isinstance(value, BicepElement):
        return
    operator = value.get("operator") if isinstance(value, dict) else None
    if isinstance(operator, dict) and operator.get("type") in ("property_accessor", "index_accessor"):
        yield from _member_refs(operator["operands"]["operand_1"])
        if operator["type"] == "property_accessor":
            yield from _member_refs(operator["operands"]["operand_2"])
        else:
            yield from refs(operator["operands"]["operand_2"])
    else:
        yield from refs(value)


def accessor(value: Any) -> list[str]:
    """`a.b.c` -> ["a", "b", "c"]; [] for anything else."""
    if isinstance(value, BicepElement):
        return [str(value)]
    operator = value.get("operator") if isinstance(value, dict) else None
    if isinstance(operator, dict) and operator.get("type") == "property_accessor":
        left, right = accessor(operator["operands"]["operand_1"]), accessor(operator["operands"]["operand_2"])
        return left + right if left and right else []
    return []


def resolve_object(tpl: Template, value: Any, caller: tuple[Template, dict[str, Any]] | None) -> dict[str, Any]:
    """An object expression -> its keys and values: literals, variables, union(), and parameters whose value
    the calling module passes (`caller`: the calling template and the module's properties)."""
    if isinstance(value, dict) and "function" in value and value["function"]["type"] == "union":
        merged: dict[str, Any] = {}
        for arg in value["function"]["parameters"].values():
            merged.update(resolve_object(tpl, arg, caller))
        return merged
    if isinstance(value, BicepElement):
        if value in tpl.section("variables"):
            return resolve_object(tpl, tpl.section("variables")[value]["value"], caller)
        if value in tpl.params and caller is not None:
            outer, module = caller
            return resolve_object(outer, module["params"][value], None)
        raise AssertionError(f"{tpl.path.name}: cannot resolve {value!r} to an object")
    assert isinstance(value, dict), f"{tpl.path.name}: not an object: {value!r}"
    return value


# -- what the code reads ------------------------------------------------------------------------------------
def settings_read_by_code() -> set[str]:
    source = (ROOT / "shared" / "settings.py").read_text()
    return {f"SHIPBOT_{name}" for name in re.findall(r"\b(?:get|number|one_of)\(\"([A-Z0-9_]+)\"", source)}


def functions_source() -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / "functions").glob("*.py")))


def binding_settings() -> set[str]:
    """Settings named by binding expressions (%NAME%) in functions/."""
    return set(re.findall(r"%([A-Z][A-Z0-9_]*)%", functions_source()))


def binding_connections() -> set[str]:
    return set(re.findall(r"\bconnection=\"([A-Za-z0-9_]+)\"", functions_source()))


def event_grid_functions() -> set[str]:
    names = set()
    for path in (ROOT / "functions").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            calls = [d for d in node.decorator_list if isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)]
            if any(c.func.attr == "event_grid_trigger" for c in calls):
                names |= {c.args[0].value for c in calls if c.func.attr == "function_name"}
    return names


# -- what the templates set ---------------------------------------------------------------------------------
def main() -> Template:
    return template(MAIN)


def app_settings() -> dict[str, Any]:
    """The Function App's app settings, keyed by name, values as main.bicep or appsettings.bicep writes them."""
    module, appsettings = main().module("appsettings")
    (resource,) = appsettings.resources_of("Microsoft.Web/sites/config").values()
    assert body(resource)["name"] == "appsettings"
    return resolve_object(appsettings, body(resource)["properties"], (main(), module))


def shipbot_settings() -> dict[str, Any]:
    return {k: v for k, v in app_settings().items() if k.startswith("SHIPBOT_")}


def param_default(tpl: Template, name: str) -> Any:
    return tpl.params[name].get("default")


def setting_param(name: str) -> str:
    """The main.bicep parameter an app setting is set from: `param` or `string(param)`."""
    value = shipbot_settings()[name]
    if isinstance(value, dict) and value.get("function", {}).get("type") == "string":
        value = value["function"]["parameters"]["value_to_convert"]
    assert isinstance(value, BicepElement) and value in main().params, f"{name} is not set from a parameter"
    return str(value)


def module_output(value: Any) -> tuple[Template, str, Any]:
    """`<module>.outputs.<name>` in main.bicep -> (the module's template, the name, the output's value)."""
    path = accessor(value)
    assert len(path) == 3 and path[1] == "outputs", f"not a module output: {value!r}"
    _, tpl = main().module(path[0])
    return tpl, path[2], tpl.section("outputs")[path[2]]["value"]


def walk(value: Any) -> Iterator[Any]:
    """Every value in a parsed template, depth first."""
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def text(value: Any) -> str:
    """An expression as Bicep text, canonically spaced: `map(filter(xs, x => ns == x.namespace), x => x.name)`."""
    if isinstance(value, BicepElement):
        return str(value)
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(text(v) for v in value) + "]"
    if isinstance(value, dict):
        if value.get("type") == "lambda_expression":
            names = [str(v) for k, v in value["detail"].items() if k.startswith("var_")]
            return f"{', '.join(names)} => {text(value['detail']['expression'])}"
        if "function" in value:
            return f"{value['function']['type']}({', '.join(text(a) for a in value['function']['parameters'].values())})"
        if "operator" in value:
            operator, operands = value["operator"]["type"], value["operator"]["operands"]
            if operator == "property_accessor":
                return f"{text(operands['operand_1'])}.{text(operands['operand_2'])}"
            symbols = {"equals": "==", "not_equals": "!=", "add": "+", "minus": "-", "multiply": "*", "divide": "/"}
            if operator in symbols:
                return f"{_operand(operands['operand_1'])} {symbols[operator]} {_operand(operands['operand_2'])}"
            if operator == "conditional":
                return (f"{_operand(operands['condition'])} ? {text(operands['true_value'])} : "
                        f"{text(operands['false_value'])}")
            if operator == "parentheses":
                return f"({text(operands.get('operand_1', operands))})"
        return "{" + ", ".join(f"{k}: {text(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _operand(value: Any) -> str:
    """An operand of a binary or conditional operator, in parentheses when it is itself one."""
    inner = isinstance(value, dict) and value.get("operator", {}).get("type") not in (None, "property_accessor")
    return f"({text(value)})" if inner else text(value)

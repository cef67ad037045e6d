"""docs/API.md cannot go stale: every name its module table lists is imported, with the parameters shown.

The rules (also stated in API.md): in the public-names column, a code span `name` or `name(params)`
is looked up in the row's module(s); `.member` or `.member(params)` in the last name before it;
every parameter listed must be one of the code's (or the code takes `**kwargs`). Spans that are not
of that form (values such as `"fast"`, shapes such as `[B,3,H,W]`) are not names.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import re

import pytest

from tests._paths import REPO

API = REPO / "docs" / "API.md"
SPAN = re.compile(r"^(?P<member>\.)?(?P<name>[A-Za-z_][\w.]*)(?:\((?P<params>.*?)\))?(?:\s*->.*)?$", re.S)


def cells(line: str) -> list[str]:
    """A Markdown table row split on the `|` outside code spans."""
    out, cur, code = [], "", False
    for ch in line.strip().strip("|"):
        if ch == "`":
            code = not code
        if ch == "|" and not code:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return out + [cur.strip()]


def table_rows() -> list[tuple[list[str], list[str]]]:
    """`(modules, code spans of the names column)` of each row of the module table."""
    rows = []
    for line in API.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        module_cell, names_cell = cells(line)[:2]
        modules = ["cugd_core." + m.removesuffix(".py").removesuffix("/").replace("/", ".")
                   for m in re.findall(r"`([^`]+)`", module_cell)]
        rows.append((modules, re.findall(r"`([^`]+)`", names_cell)))
    return rows


def split_params(text: str) -> list[str]:
    """Parameter names of `a, b=f(1, 2), *, c="x,y"` (nesting and quotes respected); `*`, `...` dropped."""
    parts, cur, depth, quote = [], "", 0, None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    return [m.group(0) for p in parts if (m := re.match(r"\*{0,2}[A-Za-z_]\w*", p.strip()))]


def has_member(owner, name: str) -> bool:
    if hasattr(owner, name):
        return True
    return dataclasses.is_dataclass(owner) and name in {f.name for f in dataclasses.fields(owner)}


def check_params(obj, params: list[str], what: str) -> list[str]:
    if not params:
        return []
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return [f"{what}: no signature to compare with"]
    kinds = {p.kind for p in sig.parameters.values()}
    errors = []
    for p in params:
        if p.startswith("**"):
            ok = inspect.Parameter.VAR_KEYWORD in kinds
        elif p.startswith("*"):
            ok = inspect.Parameter.VAR_POSITIONAL in kinds
        else:
            ok = p in sig.parameters or inspect.Parameter.VAR_KEYWORD in kinds
        if not ok:
            errors.append(f"{what}: the code has no parameter {p!r} (it has {list(sig.parameters)})")
    return errors


def check_row(modules: list[str], spans: list[str]) -> tuple[int, list[str]]:
    """(names checked, errors) of one table row."""
    mods = [importlib.import_module(m) for m in modules]
    owner, checked, errors = None, 0, []
    for span in spans:
        m = SPAN.match(span)
        if not m:
            continue
        head, *rest = m["name"].split(".")
        if m["member"]:
            if owner is None:
                errors.append(f"{span}: a member with no name before it")
                continue
            base, label = owner, f"{getattr(owner, '__name__', type(owner).__name__)}.{head}"
        else:
            base = next((mod for mod in mods if hasattr(mod, head)), None)
            label = f"{'/'.join(modules)}: {head}"
            if base is None:
                errors.append(f"{label} does not exist")
                continue
        if not has_member(base, head):
            errors.append(f"{label} does not exist")
            continue
        obj = getattr(base, head, None)
        for part in rest:  # `Schedule.linear`
            if not has_member(obj, part):
                errors.append(f"{span}: {part} does not exist")
                break
            obj = getattr(obj, part, None)
        else:
            if not m["member"]:
                owner = obj
            checked += 1
            if m["params"] is not None and obj is not None:
                errors += check_params(obj, split_params(m["params"]), span)
    return checked, errors


ROWS = table_rows()


def test_the_table_lists_the_core_modules():
    listed = {m for modules, _ in ROWS for m in modules}
    assert {"cugd_core.layout", "cugd_core.samplers", "cugd_core.priors", "cugd_core.train"} <= listed
    assert sum(len(spans) for _, spans in ROWS) > 100


@pytest.mark.parametrize("modules, spans", ROWS, ids=[",".join(m) for m, _ in ROWS])
def test_every_listed_name_exists_with_its_parameters(modules, spans):
    checked, errors = check_row(modules, spans)
    assert not errors, "docs/API.md is stale:\n" + "\n".join(errors)
    assert checked or modules[0] == "cugd_core.commands", f"no name checked in the row of {modules}"


def test_the_checker_catches_stale_entries():
    """A renamed parameter, a missing function and a missing method are reported."""
    _, errors = check_row(["cugd_core.samplers"], ["init_state(shape, schedule)", "ddim_timesteps(t_start, n)",
                                                   "SamplerState(x, t)", ".image()", ".nope()"])
    assert len(errors) == 3
    assert "'shape'" in errors[0] and "ddim_timesteps" in errors[1] and "nope" in errors[2]
    assert split_params('image, sam, mode="exact", *, f=g(1, 2), s="a,b", **kw') == \
        ["image", "sam", "mode", "f", "s", "**kw"]

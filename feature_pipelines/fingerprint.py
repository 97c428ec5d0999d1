"""A stable fingerprint of code and of everything it uses, for definition hashes.

A transformation's output depends on more than its own body: the helpers it calls, the constants it reads
(a country table), the values its closures captured and its default arguments. `fingerprint(fn, ...)`
walks that closure: the function's code object (bytecode, constants, nested functions, lambdas and
comprehensions), every module-level name the code references (`co_names` found in its globals, and
attributes of the user modules it references), closure cells and defaults, recursively for every
function and class of user code it reaches. It stops at libraries: the standard library, installed
third-party packages and `feature_pipelines` itself are named, not walked (a library upgrade is a
release, not a definition change).

Values are rendered by a stable representation (sets sorted, dict insertion order kept, no memory
addresses, polars expressions serialized), so the same code and data give the same hash in every process
of the same Python version. Source positions (file, line numbers) are not part of it: moving a function
or editing a comment does not change the hash; changing what it computes does. A Python upgrade changes
bytecode, hence every hash, once.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import io
import json
import os
import re
import sys
import sysconfig
import types
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import PurePath
from typing import Any

import polars as pl

_FRAMEWORK = "feature_pipelines"
_SPEC = "feature_pipelines.spec"
_DOCUMENTATION = {"description", "owner", "tags", "deprecated", "defined_at"}
"""Fields of spec objects that document, not compute: editing them does not change a code hash."""
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_STDLIB = tuple(
    os.path.realpath(p) for p in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]} if p
)


def fingerprint(*roots: Callable | None) -> str:
    """A short hash of `roots` and everything they use (see the module docstring)."""
    return hashlib.sha256(describe(*roots).encode()).hexdigest()[:12]


def describe(*roots: Callable | None) -> str:
    """The canonical text the fingerprint hashes: the roots' tokens and every entry they reach, sorted."""
    walker = _Walker()
    tokens = [walker.value(root) for root in roots]
    return json.dumps({"roots": tokens, "entries": dict(sorted(walker.entries.items()))}, sort_keys=True)


@functools.cache
def is_library(module_name: str | None) -> bool:
    """Standard library, installed packages and the framework are libraries: named, not walked."""
    if not module_name or module_name == "builtins":
        return True
    top = module_name.split(".")[0]
    if top == _FRAMEWORK or top in sys.stdlib_module_names:
        return True
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if path is None:
        return module is not None  # built-in or namespace module: a library; unknown modules are user code
    real = os.path.realpath(path)
    parts = PurePath(real).parts
    return "site-packages" in parts or "dist-packages" in parts or real.startswith(_STDLIB)


class _Walker:
    """One walk: entries by token, each object walked once (cycles end at a token)."""

    def __init__(self) -> None:
        self.entries: dict[str, str] = {}
        self.tokens: dict[int, str] = {}
        self.keep: list[Any] = []  # walked objects stay alive, so their ids stay unique during the walk

    # -- references -------------------------------------------------------------------------------
    def _token(self, obj: Any, name: str) -> tuple[str, bool]:
        """The token of a walked object, and whether it is new (to be walked now)."""
        known = self.tokens.get(id(obj))
        if known is not None:
            return known, False
        token, n = name, 1
        while token in self.entries:  # two lambdas of one module, functions built by one factory
            n += 1
            token = f"{name}#{n}"
        self.tokens[id(obj)] = token
        self.entries[token] = ""  # reserved: a cycle back to it ends here
        self.keep.append(obj)
        return token, True

    def function(self, fn: types.FunctionType) -> str:
        module = fn.__module__
        name = f"{module}.{fn.__qualname__}"
        if is_library(module):
            return f"lib:{name}"
        token, new = self._token(fn, f"fn:{name}")
        if not new:
            return token
        code = fn.__code__
        closure = {
            var: self.value(cell.cell_contents) if _filled(cell) else "<empty cell>"
            for var, cell in zip(code.co_freevars, fn.__closure__ or (), strict=True)
        }
        body = {
            "code": self._code(code, fn.__globals__),
            "defaults": [self.value(d) for d in fn.__defaults__ or ()],
            "kwdefaults": {k: self.value(v) for k, v in sorted((fn.__kwdefaults__ or {}).items())},
            "closure": closure,
        }
        self.entries[token] = json.dumps(body, sort_keys=True)
        return token

    def cls(self, klass: type) -> str:
        name = f"{klass.__module__}.{klass.__qualname__}"
        if is_library(klass.__module__):
            return f"lib:{name}"
        token, new = self._token(klass, f"class:{name}")
        if not new:
            return token
        body = {
            "bases": [self.value(b) for b in klass.__bases__],
            "attributes": {
                k: self.value(v)
                for k, v in vars(klass).items()
                if k not in ("__dict__", "__weakref__", "__module__", "__qualname__", "__doc__")
            },
        }
        self.entries[token] = json.dumps(body, sort_keys=True)
        return token

    def _code(self, code: types.CodeType, globals_: Mapping[str, Any]) -> dict[str, Any]:
        """A code object without positions; nested code (inner functions, lambdas, comprehensions) inline."""
        refs = self._globals(code, globals_)
        consts = [self._code(c, globals_) if isinstance(c, types.CodeType) else self.value(c) for c in code.co_consts]
        return {
            "bytecode": code.co_code.hex(),
            "consts": consts,
            "names": list(code.co_names),
            "varnames": list(code.co_varnames),
            "freevars": list(code.co_freevars),
            "cellvars": list(code.co_cellvars),
            "args": [code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags],
            "exceptions": getattr(code, "co_exceptiontable", b"").hex(),
            "globals": refs,
        }

    def _globals(self, code: types.CodeType, globals_: Mapping[str, Any]) -> dict[str, str]:
        """Module-level names the code references, and attributes it reads of the user modules among them."""
        names = code.co_names
        refs: dict[str, str] = {}
        for name in names:
            if name not in globals_:
                continue  # a builtin, an attribute name, or a name the code defines itself
            value = globals_[name]
            refs[name] = self.value(value)
            if isinstance(value, types.ModuleType):
                refs.update(self._module_attributes(name, value, names))
        return refs

    def _module_attributes(self, prefix: str, module: types.ModuleType, names: tuple[str, ...]) -> dict[str, str]:
        """`rules.is_purchase()` reads `is_purchase` of the user module `rules`: walk it too."""
        if is_library(module.__name__):
            return {}
        out: dict[str, str] = {}
        for attr in names:
            if attr in vars(module):
                value = vars(module)[attr]
                out[f"{prefix}.{attr}"] = self.value(value)
                if isinstance(value, types.ModuleType):
                    out.update(self._module_attributes(f"{prefix}.{attr}", value, names))
        return out

    # -- values -----------------------------------------------------------------------------------
    def value(self, obj: Any) -> str:
        """A stable text for any value a definition can use."""
        if obj is None or isinstance(obj, bool | int | float | complex | str | bytes | Decimal):
            return repr(obj)
        if isinstance(obj, enum.Enum):
            return f"{self.cls(type(obj))}.{obj.name}"
        if isinstance(obj, date | datetime | time | timedelta | PurePath):
            return repr(obj)
        if isinstance(obj, types.FunctionType):
            return self.function(obj)
        if isinstance(obj, types.MethodType):
            return f"method({self.value(obj.__func__)}, {self.value(obj.__self__)})"
        if isinstance(obj, staticmethod | classmethod):
            return f"{type(obj).__name__}({self.value(obj.__func__)})"
        if isinstance(obj, property):
            return f"property({self.value(obj.fget)}, {self.value(obj.fset)}, {self.value(obj.fdel)})"
        if isinstance(obj, functools.partial):
            args = [self.value(a) for a in obj.args]
            kwargs = {k: self.value(v) for k, v in sorted(obj.keywords.items())}
            return f"partial({self.value(obj.func)}, {args}, {kwargs})"
        if isinstance(obj, types.BuiltinFunctionType | types.BuiltinMethodType):
            return f"lib:{getattr(obj, '__module__', None) or ''}.{obj.__qualname__}"
        if isinstance(obj, types.ModuleType):
            return f"module:{obj.__name__}"
        if isinstance(obj, pl.DataType) or (isinstance(obj, type) and issubclass(obj, pl.DataType)):
            return f"dtype:{obj!r}"
        if isinstance(obj, type):
            return self.cls(obj)
        if isinstance(obj, types.CodeType):
            return json.dumps(self._code(obj, {}), sort_keys=True)
        if isinstance(obj, re.Pattern):
            return f"re({obj.pattern!r}, {obj.flags})"
        if isinstance(obj, pl.Expr):
            return f"expr:{obj.meta.serialize(format='json')}"
        if isinstance(obj, pl.DataFrame | pl.Series):
            return f"{type(obj).__name__}:{_frame_digest(obj)}"
        if isinstance(obj, pl.LazyFrame):
            return f"LazyFrame:{obj.serialize(format='json')}"
        if isinstance(obj, set | frozenset):
            return f"{type(obj).__name__}{{{', '.join(sorted(self.value(v) for v in obj))}}}"
        if isinstance(obj, list | tuple):
            return f"{type(obj).__name__}[{', '.join(self.value(v) for v in obj)}]"
        if isinstance(obj, Mapping):
            items = ", ".join(f"{self.value(k)}: {self.value(v)}" for k, v in obj.items())
            return f"{type(obj).__name__}{{{items}}}"
        return self._instance(obj)

    def _instance(self, obj: Any) -> str:
        """Dataclasses by their compared fields, other objects by their attributes, else a cleaned repr."""
        key = id(obj)
        if key in self.tokens:
            return self.tokens[key]
        self.tokens[key] = f"<cycle:{type(obj).__qualname__}>"
        self.keep.append(obj)
        try:
            kind = self.value(type(obj))
            if type(obj).__module__ == _SPEC:
                return f"{kind}({json.dumps(self._spec_fields(obj), sort_keys=True)})"
            if dataclasses.is_dataclass(obj):
                fields = {f.name: self.value(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.compare}
                return f"{kind}({json.dumps(fields, sort_keys=True)})"
            state = getattr(obj, "__dict__", None)
            if state is not None and not is_library(type(obj).__module__):
                return f"{kind}({json.dumps({k: self.value(v) for k, v in sorted(state.items())}, sort_keys=True)})"
            return f"{kind}:{_ADDRESS.sub('', repr(obj))}"
        finally:
            del self.tokens[key]

    def _spec_fields(self, obj: Any) -> dict[str, str]:
        """A spec object the code reads (a transformation selecting its own view's feature names): what it
        computes with, not its documentation, and its functions by name (their own hash covers them)."""
        out = {}
        for f in dataclasses.fields(obj):
            if not f.compare or f.name in _DOCUMENTATION:
                continue
            value = getattr(obj, f.name)
            out[f.name] = (
                f"fn:{value.__module__}.{value.__qualname__}"
                if isinstance(value, types.FunctionType)
                else self.value(value)
            )
        return out


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _frame_digest(obj: pl.DataFrame | pl.Series) -> str:
    frame = obj.to_frame() if isinstance(obj, pl.Series) else obj
    buf = io.BytesIO()
    frame.write_ipc(buf, compression="uncompressed")
    return hashlib.sha256(buf.getvalue()).hexdigest()

"""Classes stored by name (enums, named tuples, dataclasses, pydantic models; see
:mod:`outlast.serde`): what a class must be to be written, how it is named, found and rebuilt.

A class is stored as ``"module:Qualname"``. Reading looks the name up in modules that are
already imported, through their ``__dict__`` only: nothing is imported and none of their
code runs (no PEP 562 ``__getattr__``, no proxy's ``__getattribute__``).

A class defined in a script run as ``python script.py`` has module ``__main__``; it is
written under the name the script has when imported (``script``), so the script and
``outlast worker script:app`` write the same bytes and read each other's values. Records
written under ``__main__`` (outlast 0.1.0) are also looked up in the modules given to
:func:`register_home`.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any

from .errors import SerializationError, UnreadableValue
from .serde_tags import _MISSING, _TAG, _arr, _name, _Unsupported

#: Encodes a nested value (the codec's own recursion, handed in so this module sits below it).
Encode = Callable[[Any, "dict[str, bytes] | None"], Any]

__all__ = ["CLASS_DECODERS", "class_ref", "find_class", "register_home"]


def _is_pydantic(t: type) -> bool:
    # Duck typing keeps pydantic out of the import graph: only a real v2 model has both methods.
    return any(
        c.__name__ == "BaseModel" and c.__module__.startswith("pydantic") for c in t.__mro__
    ) and hasattr(t, "model_dump") and hasattr(t, "model_validate")


# The classes stored by name, by kind: what a class must be, to be written or rebuilt.
_KINDS: dict[str, tuple[str, Callable[[type], bool]]] = {
    "e": ("Enum", lambda c: issubclass(c, enum.Enum)),
    "nt": ("named tuple", lambda c: issubclass(c, tuple) and hasattr(c, "_fields")),
    "dc": ("dataclass", dataclasses.is_dataclass),
    "pd": ("pydantic model", _is_pydantic),
}
_CLASSES: dict[type, tuple[str, str, tuple[str, ...]]] = {}  # kind, "mod:Qual", field names


def _class_info(v: Any, t: type) -> tuple[str, str, tuple[str, ...]]:
    kind = next((kind for kind, (_, check) in _KINDS.items() if check(t)), None)
    if kind is None:
        raise _Unsupported(v)
    if find_class(t.__module__, t.__qualname__) is not t:
        raise _Unsupported(v, f"its class {_name(t)} cannot be found by name when read back; "
                              "define it at module level")
    fields = tuple(f.name for f in dataclasses.fields(t)) if kind == "dc" else ()
    info = _CLASSES[t] = (kind, class_ref(t), fields)
    return info


def encode_class(
    v: Any, t: type, b: dict[str, bytes] | None, _enc: Encode, _seq: Encode
) -> Any:
    """``v``, an instance of a class stored by name (Enum, named tuple, dataclass, pydantic
    model), as a tagged value; its fields go through ``_enc`` (sequences through ``_seq``)."""
    kind, ref, fields = _CLASSES.get(t) or _class_info(v, t)
    if kind == "e":
        if t.__members__.get(v.name) is v:  # type: ignore[attr-defined]
            return {_TAG: "e", "c": ref, "n": v.name}
        return {_TAG: "e", "c": ref, "v": _enc(v.value, b)}  # a composite Flag has no name
    if kind == "nt":
        return {_TAG: "nt", "c": ref, "v": _seq(v, b)}
    if kind == "dc":
        raw = {n: x for n in fields if (x := getattr(v, n, _MISSING)) is not _MISSING}
    else:
        try:
            raw = v.model_dump(mode="python")
        except Exception as exc:
            raise _Unsupported(v, f"its model_dump() failed: {exc}") from None
    try:
        return {_TAG: kind, "c": ref, "v": _enc(raw, b)}
    except _Unsupported as e:
        if e.path and e.path[-1].startswith("['"):
            e.path[-1] = "." + e.path[-1][2:-2]  # a field, not a key
        e.node = v
        raise




def class_ref(t: type) -> str:
    """``"module:Qualname"`` of ``t`` as stored; a script's ``__main__`` is written under the
    name that script has when imported (see the module docstring)."""
    module = t.__module__
    return f"{_main_name() if module == '__main__' else module}:{t.__qualname__}"


def _main_name() -> str:
    """The importable name of ``__main__``: ``pkg.mod`` under ``python -m pkg.mod``, ``script``
    for ``python script.py``; ``__main__`` itself when there is none (``python -c``, a REPL)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and isinstance(spec.name, str) and spec.name != "__main__":
        return str(spec.name)
    file = getattr(main, "__file__", None)
    stem, ext = os.path.splitext(os.path.basename(file)) if isinstance(file, str) else ("", "")
    return stem if ext == ".py" and stem.isidentifier() else "__main__"


_HOMES: list[str] = []  # modules that were a script's __main__ elsewhere (register_home)


def register_home(module: str) -> None:
    """Read values recorded under ``__main__`` as if they named ``module``.

    ``outlast worker script:app`` calls it with ``script``: runs started by ``python script.py``
    with an older outlast stored their classes as ``__main__:X``.
    """
    if module not in _HOMES:
        _HOMES.append(module)


def find_class(module: str, qualname: str) -> Any:
    """The object named ``module.qualname`` if its module is already imported, else None.

    Names are looked up in ``vars()``, never with ``getattr``: a module's ``__getattr__``
    (PEP 562) may import code, and nothing named by stored data is ever imported. A script's
    classes are also found under its importable name, and ``__main__`` in the home modules.
    """
    for name in _candidates(module):
        obj: Any = sys.modules.get(name)
        for part in qualname.split("."):
            obj = _namespace(obj).get(part)
        if obj is not None:
            return obj
    return None


def _namespace(obj: Any) -> Mapping[str, Any]:
    """A module's or class's own attributes, read without running any of its code (a lazy
    proxy's ``__getattribute__`` or a metaclass property); nothing for other objects."""
    kind = type(obj)  # not isinstance(): it would ask a proxy for its __class__
    if issubclass(kind, types.ModuleType):
        namespace = object.__getattribute__(obj, "__dict__")
        return namespace if type(namespace) is dict else {}
    if issubclass(kind, type):
        return _CLASS_DICT(obj)  # type: ignore[no-any-return]
    return {}


_CLASS_DICT = type.__dict__["__dict__"].__get__


def _candidates(module: str) -> list[str]:
    if module == "__main__":
        return ["__main__", *_HOMES]
    return [module, "__main__"] if module == _main_name() else [module]


# --- reading ------------------------------------------------------------------------------


def _lookup(ref: str, kind: str) -> Any:
    module, _, qualname = ref.partition(":")
    cls = find_class(module, qualname)
    label, check = _KINDS[kind]
    if isinstance(cls, type) and check(cls):
        return cls
    type_name = f"{module}.{qualname}"
    if cls is not None:
        raise SerializationError(f"the stored value needs {label} {type_name}, but that name is "
                                 f"not a {label}", class_name=type_name)
    if module not in sys.modules:
        problem = (f"module {module} is not imported. outlast never imports code named by "
                   f"stored data: import {module} before resuming")
    else:
        problem = f"that name is missing from module {module}"
    raise UnreadableValue(f"the stored value needs {label} {type_name}, but {problem}",
                          class_name=type_name, type_name=type_name)


def _dec_enum(d: dict[str, Any]) -> Any:
    cls = _lookup(d["c"], "e")
    if "n" not in d:
        return cls(d["v"])
    if (member := cls.__members__.get(d["n"])) is None:
        raise SerializationError(f"enum {_name(cls)} has no member {d['n']!r} any more")
    return member


def _dec_dataclass(d: dict[str, Any]) -> Any:
    cls, values = _lookup(d["c"], "dc"), d["v"]
    if type(values) is not dict:
        raise ValueError("dataclass fields are not an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if unknown := sorted(values.keys() - fields.keys()):
        raise SerializationError(f"dataclass {_name(cls)} has no field {unknown} any more")
    # Built like pickle does, without __init__: frozen classes and init=False fields work, and
    # the object is the one that was stored, not one __post_init__ may have changed.
    obj = cls.__new__(cls)
    for name, f in fields.items():
        if name in values:
            value = values[name]
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        elif f.init:
            raise SerializationError(f"dataclass {_name(cls)} has a new required field {name!r}")
        else:
            continue
        object.__setattr__(obj, name, value)
    return obj


def _dec_pydantic(d: dict[str, Any]) -> Any:
    cls = _lookup(d["c"], "pd")
    try:
        return cls.model_validate(d["v"])
    except ValueError as exc:  # pydantic's ValidationError
        raise SerializationError(f"stored {_name(cls)} no longer validates: {exc}") from None


CLASS_DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "e": _dec_enum,
    "nt": lambda d: _lookup(d["c"], "nt")(*_arr(d["v"])),
    "dc": _dec_dataclass,
    "pd": _dec_pydantic,
}

"""A ``tensorrt`` module that checks every use against the REAL TensorRT Python bindings.

``CheckedTensorRT(real, behaviour, collector)`` stands in for ``tensorrt`` (install it as
``sys.modules["tensorrt"]``): every attribute the project reads is looked up first in ``real``
(the ``tensorrt_bindings`` module of a real wheel, importable without TensorRT's libraries through
stand-in ``.so`` files, so nothing in it can execute) and then served by ``behaviour`` (the
behavioural fake of :mod:`fake_tensorrt`). Checked, with the project's call site:

* module attributes, classes, class attributes, enum members, methods and properties exist in the
  real module (``missing``);
* each call binds, by position and by keyword, to one of the real overloads, as written in the
  pybind11 docstrings, with argument types that pybind11 would accept (``signature``); the class
  of an object is the real class named by the return annotation of the call that made it;
* the fake's enum members have the real names and ``int`` values, and the fake returns what the
  real annotation says (``fake``);
* a project class deriving from a TensorRT class (``class Logger(trt.ILogger)``) calls the base
  ``__init__`` (pybind11 requires it), overrides methods with signatures TensorRT can call, and
  overrides the methods the real docstring says must be overridden;
* enum members reach the project as :class:`RealEnumMember` (also in the fake's calls back into
  the logger), which behaves as pybind11's members do, not as the fake's ``IntEnum``: comparing
  one with an int, ordering it against one, or arithmetic on it is reported.

Decisions where pybind11 is lenient: a ``bool`` parameter takes only ``bool`` (pybind11 would
convert ``None`` or an object with ``__bool__``); an ``int`` parameter refuses an enum member
(flags must be ``1 << int(member)``); ``None`` is accepted only where annotated ``Optional``.
Objects usable as buffers (``IHostMemory``) are passed to the project unwrapped (a Python proxy
cannot export the buffer protocol on Python 3.11); their class is remembered by identity.
"""

from __future__ import annotations

import enum
import inspect
import re
import types
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from api_check import Collector

# --- pybind11 docstring signatures ------------------------------------------------------------


class Param:
    __slots__ = ("name", "annotation", "has_default", "star")

    def __init__(self, name: str, annotation: str, has_default: bool, star: str = "") -> None:
        self.name, self.annotation, self.has_default, self.star = name, annotation, has_default, star

    def __repr__(self) -> str:
        return f"{self.star}{self.name}: {self.annotation}{' = ...' if self.has_default else ''}"


class Overload:
    def __init__(self, text: str, params: list[Param], returns: str) -> None:
        self.text, self.params, self.returns = text, params, returns


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside brackets (``[]``, ``()``, ``{}``, ``<>``)."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[({<":
            depth += 1
        elif ch in "])}>":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return [p.strip() for p in parts]


_SIG_LINE = re.compile(r"^(?:\d+\.\s+)?(?P<name>[A-Za-z_]\w*)?\((?P<params>.*)\)\s*->\s*(?P<ret>.+?)\s*$")


def _parse_params(text: str) -> list[Param]:
    params = []
    for piece in _split_top(text):
        star = ""
        if piece.startswith("**"):
            star, piece = "**", piece[2:]
        elif piece.startswith("*"):
            star, piece = "*", piece[1:]
        name, _, rest = piece.partition(":")
        ann_default = _split_top(rest, "=")
        annotation = ann_default[0].strip() if ann_default else "object"
        params.append(Param(name.strip(), annotation or "object", len(ann_default) > 1, star))
    return params


@lru_cache(maxsize=None)
def overloads(doc: str | None, name: str | None) -> tuple[Overload, ...]:
    """The signatures in a pybind11 docstring (one, or the numbered lines of an overload set).

    ``name`` None matches the nameless signature of a property getter or setter."""
    found = []
    for line in (doc or "").splitlines():
        m = _SIG_LINE.match(line.strip())
        if not m or (name is not None and m.group("name") != name) or (name is None and m.group("name")):
            continue
        if m.group("params").strip() in ("*args, **kwargs",):
            continue  # the header of an overload set
        found.append(Overload(line.strip(), _parse_params(m.group("params")), m.group("ret").strip()))
    return tuple(found)


def strip_module(annotation: str) -> str:
    """``tensorrt_bindings.tensorrt.ILogger.Severity`` -> ``ILogger.Severity``."""
    a = annotation.strip()
    for prefix in ("tensorrt_bindings.tensorrt.", "tensorrt.tensorrt.", "tensorrt."):
        if a.startswith(prefix):
            return a[len(prefix):]
    return a


def is_real_enum(obj: Any) -> bool:
    """A pybind11 enum class of the real module."""
    return isinstance(obj, type) and isinstance(getattr(obj, "__members__", None), dict)


def _is_method(obj: Any) -> bool:
    return callable(obj) and not isinstance(obj, type) and not isinstance(obj, property)


_MISSING = object()
_INTS = ("int", "typing.SupportsInt", "typing.SupportsIndex", "SupportsInt", "SupportsIndex")
_BUFFERS = ("buffer", "typing_extensions.Buffer", "collections.abc.Buffer", "Buffer")


class CheckedTensorRT(types.ModuleType):
    """The checking ``tensorrt`` module (see the module docstring)."""

    def __init__(self, real: types.ModuleType, behaviour: types.ModuleType, collector: Collector) -> None:
        super().__init__("tensorrt")
        d = self.__dict__
        d["_real"], d["_fake"], d["_col"] = real, behaviour, collector
        d["_version"] = str(real.__version__)
        d["_tags"] = {}  # id(object) -> (object, real class) for objects passed unwrapped
        d["_enums"] = {}  # fake enum class -> real enum class
        d["_bases"] = {}  # real class -> checked base class for project subclasses
        self._register_enums()

    # -- the fake's enums, mapped to the real ones by where they sit --------------------------

    def _register_enums(self) -> None:
        real, fake = self._real, self._fake
        for name, obj in vars(fake).items():
            if isinstance(obj, type) and issubclass(obj, enum.Enum):
                self._enums[obj] = getattr(real, name, None)
            elif isinstance(obj, type):
                for inner, o2 in vars(obj).items():
                    if isinstance(o2, type) and issubclass(o2, enum.Enum):
                        self._enums[o2] = getattr(getattr(real, name, None), inner, None)

    def fake_disagreements(self) -> list[str]:
        """Every enum member and class constant of the fake compared with the real module."""
        out = []
        seen: set[int] = set()
        for fake_enum, real_enum in self._enums.items():
            if id(fake_enum) in seen:
                continue
            seen.add(id(fake_enum))
            if real_enum is None:
                out.append(f"the stand-in's enum {fake_enum.__name__} has no counterpart in TensorRT {self._version}")
                continue
            for member in fake_enum:
                real_member = real_enum.__members__.get(member.name)
                if real_member is None:
                    out.append(f"{real_enum.__qualname__}.{member.name} does not exist in TensorRT {self._version} "
                               f"(the stand-in has it = {int(member)})")
                elif int(real_member) != int(member):
                    out.append(f"{real_enum.__qualname__}.{member.name} is {int(real_member)} in TensorRT "
                               f"{self._version}, the stand-in says {int(member)}")
        for name, cls in vars(self._fake).items():
            real_cls = getattr(self._real, name, None)
            if not isinstance(cls, type) or issubclass(cls, enum.Enum) or real_cls is None:
                continue
            for attr, value in vars(cls).items():
                if isinstance(value, enum.Enum):
                    real_value = getattr(real_cls, attr, _MISSING)
                    if real_value is _MISSING:
                        out.append(f"{name}.{attr} does not exist in TensorRT {self._version}")
                    elif int(real_value) != int(value) or type(real_value).__name__ != type(value).__name__:
                        out.append(f"{name}.{attr} is {real_value!r} in TensorRT {self._version}, "
                                   f"the stand-in says {value!r}")
        return out

    # -- module attributes ---------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name not in ("__version__",):
            raise AttributeError(name)
        return self._member(self._real, self._fake, name, name)

    def _member(self, real_owner: Any, fake_owner: Any, name: str, path: str) -> Any:
        """Look ``name`` up on a real module/class and serve it from the fake."""
        col = self._col
        col.exercised.add(path)
        real = getattr(real_owner, name, _MISSING)
        if real is _MISSING:
            col.add("missing", f"tensorrt.{path}", f"does not exist in TensorRT {self._version}")
            raise AttributeError(f"TensorRT {self._version} has no {path}")
        fake = getattr(fake_owner, name, _MISSING)
        if fake is _MISSING:
            col.add("fake", f"tensorrt.{path}", "the stand-in lacks it: extend tests/fake_tensorrt.py")
            raise AttributeError(f"the stand-in has no {path}")
        if is_real_enum(real):
            return EnumWrapper(self, real, fake, path)
        if isinstance(real, type):
            return ClassWrapper(self, real, fake, path)
        if is_real_enum(type(real)):
            return self.check_enum_value(fake, type(real), f"tensorrt.{path}")
        if isinstance(real, property):
            return fake
        if _is_method(real):
            return CheckedFunction(self, real, fake, path, bound=False)
        if isinstance(real, (str, int, float, bool)) and real != fake:
            col.add("fake", f"tensorrt.{path}", f"is {real!r} in TensorRT {self._version}, the stand-in says {fake!r}")
        return fake

    # -- values: what real type a project value stands for --------------------------------------

    def resolve(self, annotation: str) -> Any:
        """The real class or enum an annotation names, or None."""
        a = strip_module(annotation)
        if "::" in a:  # a C++ name pybind11 printed before the class was registered
            a = a.split("::")[-1]
            candidates = [a, a[1:] if a.startswith("I") else a]
        else:
            candidates = [a]
        for c in candidates:
            obj: Any = self._real
            for part in c.split("."):
                obj = getattr(obj, part, None)
                if obj is None:
                    break
            if isinstance(obj, type):
                return obj
        return None

    def real_class_of(self, value: Any) -> Any:
        """The real TensorRT class (or enum) ``value`` stands for, or None for a plain value."""
        if isinstance(value, Proxy):
            return object.__getattribute__(value, "_real_cls")
        if isinstance(value, RealEnumMember):
            return value._real_enum
        if isinstance(value, enum.Enum) and type(value) in self._enums:
            return self._enums[type(value)]
        for real_cls, base in self._bases.items():
            if isinstance(value, base):
                if not getattr(value, "_tseg_base_init_called", False):
                    self._col.add("signature", f"tensorrt.{real_cls.__name__}.__init__",
                                  f"{type(value).__name__}.__init__ does not call {real_cls.__name__}.__init__(self): "
                                  "pybind11 refuses the object ('__init__ must be called when overriding')")
                return real_cls
        tag = self._tags.get(id(value))
        if tag is not None and tag[0] is value:
            return tag[1]
        return None

    def check_arg(self, value: Any, annotation: str) -> str | None:
        """Why pybind11 would refuse ``value`` for ``annotation`` (None: accepted)."""
        a = strip_module(annotation)
        if a == "object":
            return None
        m = re.fullmatch(r"(?:typing\.)?Optional\[(.*)\]", a)
        if m or a.endswith("| None"):
            inner = m.group(1) if m else a[: -len("| None")].strip()
            return None if value is None else self.check_arg(value, inner)
        m = re.fullmatch(r"(?:typing\.)?Union\[(.*)\]", a)
        if m or " | " in a:
            options = _split_top(m.group(1)) if m else [p.strip() for p in a.split("|")]
            reasons = [self.check_arg(value, o) for o in options]
            return None if any(r is None for r in reasons) else " and ".join(r for r in reasons if r)
        if value is None:
            return f"None where {a} is expected"
        real_cls = self.real_class_of(value)
        if a in _INTS:
            if isinstance(value, (enum.Enum, RealEnumMember)):
                return f"the enum member {value!r} where an int is expected (flags are 1 << int(member))"
            if isinstance(value, (int, np.integer)):
                return None
            return f"{type(value).__name__} where an int is expected"
        if a in ("float", "typing.SupportsFloat"):
            return None if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
                else f"{type(value).__name__} where a float is expected"
        if a == "bool":
            return None if isinstance(value, (bool, np.bool_)) else f"{type(value).__name__} where a bool is expected"
        if a == "str":
            return None if isinstance(value, str) else \
                f"{type(value).__name__} where a str is expected (pybind11 does not take paths)"
        if a in _BUFFERS:
            if isinstance(value, Proxy):
                return f"a {real_cls.__name__} object where a buffer is expected"
            try:
                memoryview(value)
            except TypeError:
                return f"{type(value).__name__} where a buffer is expected"
            return None
        if a in ("tuple", "list"):
            return None if type(value).__name__ == a or isinstance(value, {"tuple": tuple, "list": list}[a]) \
                else f"{type(value).__name__} where a {a} is expected"
        if a.startswith("numpy.ndarray"):
            return None if isinstance(value, np.ndarray) else f"{type(value).__name__} where a numpy array is expected"
        m = re.fullmatch(r"(?:typing\.List|list|typing\.Sequence|collections\.abc\.Sequence)\[(.*)\]", a)
        if m:
            if not isinstance(value, (list, tuple)):
                return f"{type(value).__name__} where a sequence is expected"
            for item in value:
                r = self.check_arg(item, m.group(1))
                if r:
                    return f"item {item!r}: {r}"
            return None
        target = self.resolve(a)
        if target is None:
            return f"the checker does not understand the annotation {annotation!r} (extend tests/checked_tensorrt.py)"
        if target.__name__ == "Dims" and isinstance(value, (tuple, list)):
            bad = [v for v in value if not isinstance(v, (int, np.integer)) or isinstance(v, bool)]
            return None if not bad else f"Dims from a sequence with non-int items {bad!r}"
        if real_cls is None:
            return f"{type(value).__name__} {value!r:.60} where a tensorrt.{target.__qualname__} is expected"
        if is_real_enum(target):
            if real_cls is not target:
                owner = getattr(real_cls, "__qualname__", real_cls)
                return f"a member of {owner} where a {target.__qualname__} is expected"
            return None
        if not (isinstance(real_cls, type) and issubclass(real_cls, target)):
            return f"a tensorrt.{real_cls.__qualname__} where a tensorrt.{target.__qualname__} is expected"
        return None

    def check_enum_value(self, value: Any, real_enum: Any, api: str) -> Any:
        """A fake enum member handed to the project: its real enum, name and value must agree."""
        if not isinstance(value, enum.Enum):
            self._col.add("fake", api, f"the stand-in gives {value!r} where TensorRT gives a {real_enum.__qualname__}")
            return value
        mapped = self._enums.get(type(value))
        real_member = real_enum.__members__.get(value.name)
        if mapped is not real_enum:
            self._col.add("fake", api, f"the stand-in's {type(value).__name__} is not TensorRT's {real_enum.__qualname__}")
        elif real_member is None:
            self._col.add("fake", api, f"{real_enum.__qualname__}.{value.name} does not exist in TensorRT {self._version}")
        elif int(real_member) != int(value):
            self._col.add("fake", api, f"{real_enum.__qualname__}.{value.name} is {int(real_member)} in TensorRT "
                                       f"{self._version}, the stand-in says {int(value)}")
        return RealEnumMember(self, real_enum, value)

    def as_real(self, value: Any) -> Any:
        """A fake enum member as the project would get it from TensorRT (others unchanged)."""
        if isinstance(value, enum.Enum) and self._enums.get(type(value)) is not None:
            return RealEnumMember(self, self._enums[type(value)], value)
        return value

    def wrap_result(self, value: Any, annotation: str, api: str) -> Any:
        """Give the project the fake's result as the real annotation says it is."""
        a = strip_module(annotation)
        m = re.fullmatch(r"(?:typing\.)?Optional\[(.*)\]", a)
        if m:
            a = m.group(1)
        if a == "None":
            if value is not None:
                self._col.add("fake", api, f"the stand-in returns {value!r:.60} where TensorRT returns None")
            return value
        simple = {"int": int, "bool": bool, "str": str, "float": float, "bytes": bytes}
        if a in simple or a in _INTS:
            expected = simple.get(a, int)
            if not isinstance(value, expected):
                self._col.add("fake", api, f"the stand-in returns {type(value).__name__} where TensorRT returns {a}")
            return value
        if a in ("object", "tuple", "list") or a.startswith(("typing.", "list[", "numpy.")):
            return value
        target = self.resolve(a)
        if target is None:
            self._col.add("checker", api, f"the checker does not understand the return annotation {annotation!r}")
            return value
        if is_real_enum(target):
            return self.check_enum_value(value, target, api)
        if value is None:
            return None  # pybind11 returns None for a null pointer, whatever the annotation
        if isinstance(value, (int, float, str, bool)):
            self._col.add("fake", api, f"the stand-in returns {type(value).__name__} where TensorRT returns "
                                       f"{target.__name__}")
            return value
        try:
            memoryview(value)
        except TypeError:
            return Proxy(self, target, value)
        self._tags[id(value)] = (value, target)
        return value

    def unwrap(self, value: Any) -> Any:
        """What the fake gets for a project value: the fake object behind a proxy, the fake's enum
        member, and for a project subclass (the logger) a shim giving it real enum members."""
        if isinstance(value, Proxy):
            return object.__getattribute__(value, "_target")
        if isinstance(value, RealEnumMember):
            return value._fake
        if any(isinstance(value, base) for base in self._bases.values()):
            return _CallbackShim(self, value)
        return value

    # -- calls -----------------------------------------------------------------------------------

    def check_call(self, api: str, sigs: tuple[Overload, ...], args: tuple, kwargs: dict[str, Any],
                   skip_self: bool) -> Overload | None:
        """The first overload the arguments bind to; every mismatch recorded if none does."""
        if not sigs:
            self._col.add("checker", api, "no signature found in the real docstring")
            return None
        reasons = []
        for sig in sigs:
            why = self._bind(sig, args, kwargs, skip_self)
            if why is None:
                return sig
            reasons.append(f"{sig.text}: {why}")
        shown = ", ".join([f"{a!r:.40}" for a in args] + [f"{k}={v!r:.40}" for k, v in kwargs.items()])
        self._col.add("signature", api, f"({shown}) binds to no real overload: " + " | ".join(reasons))
        return None

    def _bind(self, sig: Overload, args: tuple, kwargs: dict[str, Any], skip_self: bool) -> str | None:
        params = list(sig.params[1:] if skip_self else sig.params)
        bound: dict[str, Any] = {}
        positional = [p for p in params if not p.star]
        star = next((p for p in params if p.star == "*"), None)
        dstar = next((p for p in params if p.star == "**"), None)
        if len(args) > len(positional) and star is None:
            return f"{len(args)} positional arguments, at most {len(positional)} accepted"
        for p, v in zip(positional, args):
            bound[p.name] = (p, v)
        for k, v in kwargs.items():
            p = next((p for p in positional if p.name == k), None)
            if p is None:
                if dstar is None:
                    return f"no parameter named {k!r}"
                continue
            if re.fullmatch(r"arg\d+", k):
                return f"{k!r} is an unnamed parameter (positional only)"
            if k in bound:
                return f"{k!r} given twice"
            bound[k] = (p, v)
        missing = [p.name for p in positional if p.name not in bound and not p.has_default]
        if missing:
            return f"missing {', '.join(missing)}"
        for name, (p, v) in bound.items():
            why = self.check_arg(v, p.annotation)
            if why:
                return f"{name}: {why}"
        return None

    def checked_base(self, real_cls: Any, fake_cls: Any) -> type:
        """The base a project class ``class X(trt.<real_cls>)`` really derives from."""
        if real_cls in self._bases:
            return self._bases[real_cls]
        checker = self

        def __init__(obj: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807 - super().__init__()
            obj._tseg_base_init_called = True
            fake_cls.__init__(obj, *args, **kwargs)

        def __init_subclass__(sub: type, **kwargs: Any) -> None:  # noqa: N807
            checker._check_subclass(sub, real_cls)

        base = type(f"Checked{real_cls.__name__}", (fake_cls,),
                    {"__init__": __init__, "__init_subclass__": classmethod(__init_subclass__)})
        self._bases[real_cls] = base
        return base

    def _check_subclass(self, sub: type, real_cls: Any) -> None:
        col, name = self._col, real_cls.__name__
        site = f"{sub.__module__}.{sub.__qualname__}"
        for attr, value in vars(sub).items():
            if attr.startswith("__"):
                continue
            real = getattr(real_cls, attr, _MISSING)
            if real is _MISSING:
                continue
            col.exercised.add(f"{name}.{attr}")
            if not _is_method(real) or not callable(value):
                col.add("signature", f"tensorrt.{name}.{attr}", f"{site} replaces a TensorRT attribute with {value!r:.40}",
                        site)
                continue
            for sig in overloads(real.__doc__, attr):
                try:
                    inspect.signature(value).bind(*range(len(sig.params)))
                except TypeError as exc:
                    col.add("signature", f"tensorrt.{name}.{attr}",
                            f"the override in {site} cannot be called as TensorRT calls it, {sig.text}: {exc}", site)
        project_classes = sub.__mro__[: sub.__mro__.index(self._bases[real_cls])]
        for attr in dir(real_cls):
            real = getattr(real_cls, attr)
            if _is_method(real) and "must be overrid" in (real.__doc__ or "") and not any(
                    attr in vars(c) for c in project_classes):
                col.add("signature", f"tensorrt.{name}.{attr}", f"{site} must override {attr} (the docstring says so)",
                        site)


class CheckedFunction:
    """A real method or function: arguments checked against its docstring, the fake serves."""

    def __init__(self, trt: CheckedTensorRT, real: Any, fake: Callable, path: str, bound: bool) -> None:
        self._trt, self._real, self._fake, self._path, self._bound = trt, real, fake, path, bound
        self._name = path.rsplit(".", 1)[-1]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        trt = self._trt
        api = f"tensorrt.{self._path}"
        if self._name == "__init__" and args and not self._bound:  # Base.__init__(self) in a subclass
            try:
                args[0]._tseg_base_init_called = True
            except AttributeError:
                pass
        sig = trt.check_call(api, overloads(self._real.__doc__, self._name), args, kwargs, skip_self=self._bound)
        result = self._fake(*[trt.unwrap(a) for a in args], **{k: trt.unwrap(v) for k, v in kwargs.items()})
        sigs = overloads(self._real.__doc__, self._name)
        returns = sig.returns if sig else (sigs[0].returns if sigs else "object")
        return trt.wrap_result(result, returns, api)


class ClassWrapper:
    """A real class: construction checked, class attributes checked, subclassing checked."""

    def __init__(self, trt: CheckedTensorRT, real: type, fake: type, path: str) -> None:
        self._trt, self._real, self._fake, self._path = trt, real, fake, path

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        trt, real = self._trt, self._real
        api = f"tensorrt.{self._path}"
        sigs = overloads(real.__init__.__doc__, "__init__")
        if not sigs:
            trt._col.add("signature", api, f"{real.__name__} has no Python constructor in TensorRT {trt._version}")
        else:
            trt.check_call(api, sigs, args, kwargs, skip_self=True)
        obj = self._fake(*[trt.unwrap(a) for a in args], **{k: trt.unwrap(v) for k, v in kwargs.items()})
        return Proxy(trt, real, obj)

    def __getattribute__(self, name: str) -> Any:
        if name == "__init__":  # ``trt.ILogger.__init__(self)`` in a subclass: the real one, not ours
            get = object.__getattribute__
            return get(self, "_trt")._member(get(self, "_real"), get(self, "_fake"), name, f"{get(self, '_path')}.{name}")
        return object.__getattribute__(self, name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._trt._member(self._real, self._fake, name, f"{self._path}.{name}")

    def __mro_entries__(self, bases: tuple) -> tuple[type]:
        self._trt._col.exercised.add(f"{self._path} (subclassed)")
        return (self._trt.checked_base(self._real, self._fake),)

    def __instancecheck__(self, obj: Any) -> bool:
        cls = self._trt.real_class_of(obj)
        return isinstance(cls, type) and issubclass(cls, self._real)

    def __repr__(self) -> str:
        return f"<checked tensorrt.{self._path}>"


class EnumWrapper:
    """A real enum: members must exist with the fake's values."""

    def __init__(self, trt: CheckedTensorRT, real: type, fake: Any, path: str) -> None:
        self._trt, self._real, self._fake, self._path = trt, real, fake, path
        if isinstance(fake, type) and issubclass(fake, enum.Enum):
            trt._enums.setdefault(fake, real)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._trt._member(self._real, self._fake, name, f"{self._path}.{name}")

    def __call__(self, value: Any) -> Any:
        if int(value) not in {int(m) for m in self._real.__members__.values()}:
            self._trt._col.add("signature", f"tensorrt.{self._path}", f"{value!r} is not a value of the real enum")
        return self._trt.as_real(self._fake(int(value)))

    def __iter__(self) -> Any:
        self._trt._col.add("signature", f"tensorrt.{self._path}", "a TensorRT enum class is not iterable "
                                                                  "(iterate over its __members__)")
        raise TypeError(f"'pybind11_type' object is not iterable ({self._path})")

    @property
    def __members__(self) -> dict[str, Any]:
        self._trt._col.exercised.add(f"{self._path}.__members__")
        fake = self._fake.__members__
        return {name: self._trt.as_real(fake[name]) for name in self._real.__members__ if name in fake}

    def __instancecheck__(self, obj: Any) -> bool:
        return self._trt.real_class_of(obj) is self._real

    def __repr__(self) -> str:
        return f"<checked tensorrt.{self._path}>"


class Proxy:
    """An object of a real class, served by a fake object."""

    def __init__(self, trt: CheckedTensorRT, real_cls: type, target: Any) -> None:
        object.__setattr__(self, "_trt", trt)
        object.__setattr__(self, "_real_cls", real_cls)
        object.__setattr__(self, "_target", target)

    def _lookup(self, name: str) -> tuple[Any, str]:
        trt, cls = object.__getattribute__(self, "_trt"), object.__getattribute__(self, "_real_cls")
        path = f"{cls.__qualname__}.{name}"
        trt._col.exercised.add(path)
        real = getattr(cls, name, _MISSING)
        if real is _MISSING:
            trt._col.add("missing", f"tensorrt.{path}", f"does not exist in TensorRT {trt._version}")
            raise AttributeError(f"TensorRT {trt._version}: {cls.__qualname__} has no attribute {name!r}")
        return real, path

    def __getattr__(self, name: str) -> Any:
        trt, target = object.__getattribute__(self, "_trt"), object.__getattribute__(self, "_target")
        real, path = self._lookup(name)
        fake = getattr(target, name, _MISSING)
        if fake is _MISSING:
            trt._col.add("fake", f"tensorrt.{path}", "the stand-in lacks it: extend tests/fake_tensorrt.py")
            raise AttributeError(f"the stand-in has no {path}")
        if isinstance(real, property):
            sigs = overloads(real.fget.__doc__, None) if real.fget else ()
            return trt.wrap_result(fake, sigs[0].returns if sigs else "object", f"tensorrt.{path}")
        if _is_method(real):
            return CheckedFunction(trt, real, fake, path, bound=True)
        if is_real_enum(type(real)):
            return trt.check_enum_value(fake, type(real), f"tensorrt.{path}")
        return fake

    def __setattr__(self, name: str, value: Any) -> None:
        trt, target = object.__getattribute__(self, "_trt"), object.__getattribute__(self, "_target")
        real, path = self._lookup(name)
        api = f"tensorrt.{path}"
        if not isinstance(real, property) or real.fset is None:
            trt._col.add("signature", api, "is read-only in the real module")
        else:
            sigs = overloads(real.fset.__doc__, None)
            if sigs and len(sigs[0].params) == 2:
                why = trt.check_arg(value, sigs[0].params[1].annotation)
                if why:
                    trt._col.add("signature", api, f"set to {value!r:.40}: {why}")
            else:
                trt._col.add("checker", api, f"cannot read the setter's signature from {real.fset.__doc__!r:.80}")
        setattr(target, name, trt.unwrap(value))

    def _dunder(self, name: str, *args: Any) -> Any:
        cls = object.__getattribute__(self, "_real_cls")
        trt, target = object.__getattribute__(self, "_trt"), object.__getattribute__(self, "_target")
        trt._col.exercised.add(f"{cls.__qualname__}.{name}")
        if getattr(cls, name, None) is getattr(object, name, None):
            trt._col.add("missing", f"tensorrt.{cls.__qualname__}.{name}",
                         f"the real class does not define {name} (Python's default applies)")
        return getattr(target, name)(*args)

    def __str__(self) -> str:
        return self._dunder("__str__")

    def __bool__(self) -> bool:
        cls = object.__getattribute__(self, "_real_cls")
        if hasattr(cls, "__bool__") or hasattr(cls, "__len__"):
            return bool(self._dunder("__bool__" if hasattr(cls, "__bool__") else "__len__"))
        return True  # pybind11 objects are true unless their class says otherwise

    def __len__(self) -> int:
        return self._dunder("__len__")

    def __getitem__(self, key: Any) -> Any:
        return self._dunder("__getitem__", key)

    def __enter__(self) -> Any:
        self._dunder("__enter__")
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._dunder("__exit__", *exc)

    def __repr__(self) -> str:
        return f"<checked tensorrt.{object.__getattribute__(self, '_real_cls').__qualname__}>"


class RealEnumMember:
    """A member of a real TensorRT enum as pybind11 makes it: ``int()`` and ``operator.index``
    work, it hashes as its value and is always true; it equals only the same member (``== 3`` is
    False), orders only against members of the same enum (else TypeError) and supports no
    arithmetic (``1 << member`` is a TypeError). The fake's ``IntEnum`` does all of these, so a
    project relying on them would pass with the fake and fail with TensorRT: each is reported."""

    __slots__ = ("_trt", "_real_enum", "_fake", "_name", "value")

    def __init__(self, trt: CheckedTensorRT, real_enum: type, fake: enum.Enum) -> None:
        self._trt, self._real_enum, self._fake = trt, real_enum, fake
        self._name, self.value = fake.name, int(fake)

    @property
    def name(self) -> str:
        """The member's name, as pybind11 enums have it (a read the project may make)."""
        self._trt._col.exercised.add(f"{self._real_enum.__qualname__}.name")
        return self._name

    def _misuse(self, what: str) -> None:
        self._trt._col.add("signature", f"tensorrt.{self._real_enum.__qualname__}.{self._name}", what)

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __bool__(self) -> bool:
        return True

    def _same(self, other: Any) -> bool | None:
        if isinstance(other, RealEnumMember):
            return other._real_enum is self._real_enum
        if isinstance(other, enum.Enum) and self._trt._enums.get(type(other)) is self._real_enum:
            return True  # the fake's own member, as the stand-in passes it back
        return None

    def __eq__(self, other: Any) -> bool:
        same = self._same(other)
        if same is None:
            if isinstance(other, (int, float)):
                self._misuse(f"compared with {other!r}: always False with the real module (compare with a member)")
            return False
        return same and int(other) == self.value

    def __ne__(self, other: Any) -> bool:
        return not self.__eq__(other)

    def _order(self, other: Any, op: Callable[[int, int], bool], sym: str) -> bool:
        if not self._same(other):
            self._misuse(f"ordered ({sym}) against {other!r}: TypeError with the real module "
                         "('Expected an enumeration of matching type!')")
            raise TypeError("Expected an enumeration of matching type!")
        return op(self.value, int(other))

    def __lt__(self, other: Any) -> bool:
        return self._order(other, int.__lt__, "<")

    def __le__(self, other: Any) -> bool:
        return self._order(other, int.__le__, "<=")

    def __gt__(self, other: Any) -> bool:
        return self._order(other, int.__gt__, ">")

    def __ge__(self, other: Any) -> bool:
        return self._order(other, int.__ge__, ">=")

    def _arith(self, *_: Any) -> Any:
        self._misuse("used in arithmetic: TypeError with the real module (use int(member); flags are 1 << int(member))")
        return NotImplemented

    __add__ = __radd__ = __sub__ = __rsub__ = __or__ = __ror__ = __and__ = __rand__ = _arith
    __lshift__ = __rlshift__ = __rshift__ = __rrshift__ = __xor__ = __rxor__ = __mul__ = __rmul__ = _arith

    def __repr__(self) -> str:
        return f"<{self._real_enum.__name__}.{self._name}: {self.value}>"

    def __str__(self) -> str:
        return f"{self._real_enum.__name__}.{self._name}"


class _CallbackShim:
    """A project object (the logger) as the fake sees it: calls back into it with real-like
    enum members, as TensorRT would."""

    def __init__(self, trt: CheckedTensorRT, obj: Any) -> None:
        self._trt, self._obj = trt, obj

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        if not callable(attr):
            return attr
        trt = self._trt

        def call(*args: Any, **kwargs: Any) -> Any:
            return attr(*[trt.as_real(a) for a in args], **{k: trt.as_real(v) for k, v in kwargs.items()})

        return call

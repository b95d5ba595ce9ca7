"""Typed access to an object's fields, raising :class:`FieldError` with the field path.

Translators read input through :class:`Fields` so that a wrong type, a missing required
field or an out-of-range value becomes one precise diagnostic (file:line, object, field
path, what would be valid) instead of a traceback.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from ..model import Diagnostic, ModelError, Severity
from ._codes import FieldCode
from ._objects import KubeObject

_MISSING = object()
T = TypeVar("T")
P = ParamSpec("P")

# The reader methods are named after the types they return; these aliases keep the
# builtin types nameable in their signatures inside the class body.
_Str = str
_Int = int
_Bool = bool
_List = list


class FieldError(Exception):
    """A field of an input object is missing, of the wrong type, or out of range."""

    def __init__(self, path: str, message: str, code: str = FieldCode.INVALID) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message
        self.code = code


class FieldErrors(FieldError):
    """Several field errors of one object; as a :class:`FieldError` it is the first of them."""

    def __init__(self, errors: list[FieldError]) -> None:
        first = errors[0]
        super().__init__(first.path, first.message, first.code)
        self.errors = errors


class Problems:
    """Collects the field errors of one object, so that every one of them is reported.

    ``with problems:`` runs a part of the reading that stops at its first error; the error
    is kept and the reading goes on after the block. :meth:`check` then raises them all.
    """

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def __enter__(self) -> Problems:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> bool:
        if not isinstance(error, FieldError):
            return False
        for one in error.errors if isinstance(error, FieldErrors) else [error]:
            # Two parts of a reader may trip over the same field: it is reported once.
            if not any((e.path, e.message) == (one.path, one.message) for e in self.errors):
                self.errors.append(one)
        return True

    def add(self, error: FieldError) -> None:
        """Keep an error found without raising it."""
        with self:
            raise error

    def read(self, step: Callable[P, T], default: T, /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``step(*args, **kwargs)``, or ``default`` (the error kept) when it fails."""
        with self:
            return step(*args, **kwargs)
        return default

    def check(self) -> None:
        """Raise the errors collected so far (one, or :class:`FieldErrors`)."""
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise FieldErrors(list(self.errors))


def type_name(value: Any) -> str:
    """The YAML-level name of a value's type (string, number, boolean, list, mapping, null)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, datetime.date):
        return "timestamp"
    if isinstance(value, bytes | bytearray):
        return "binary data"
    return "value of another kind"


class Fields:
    """A cursor over a mapping at ``path`` inside an object's body."""

    def __init__(self, data: Mapping[str, Any], path: str = "") -> None:
        self.data = data
        self.path = path

    @classmethod
    def of(cls, obj: KubeObject) -> Fields:
        """A cursor over the whole object body."""
        return cls(obj.body)

    def _child(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, required: bool) -> Any:
        value = self.data.get(key, _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise FieldError(self._child(key), "required field is missing", FieldCode.MISSING)
            return _MISSING
        return value

    def str(self, key: str, default: str | None = None, *, required: bool = False,
            choices: tuple[str, ...] | None = None) -> str | None:
        """A string field; numbers are not coerced (Kubernetes would reject them)."""
        value = self._get(key, required)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise FieldError(self._child(key), f"expected a string, got {type_name(value)} {value!r}",
                             FieldCode.WRONG_TYPE)
        if choices is not None and value not in choices:
            raise FieldError(self._child(key), f"{value!r} is not one of {', '.join(choices)}", FieldCode.NOT_ONE_OF)
        return value

    def req_str(self, key: _Str, *, choices: tuple[_Str, ...] | None = None) -> _Str:
        """A required string field."""
        value = self.str(key, required=True, choices=choices)
        assert value is not None
        return value

    def int(self, key: _Str, default: _Int | None = None, *, required: _Bool = False,
            minimum: _Int | None = None, maximum: _Int | None = None) -> _Int | None:
        """An integer field within optional bounds."""
        value = self._get(key, required)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(self._child(key), f"expected an integer, got {type_name(value)} {value!r}",
                             FieldCode.WRONG_TYPE)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            lo = "" if minimum is None else str(minimum)
            hi = "" if maximum is None else str(maximum)
            raise FieldError(self._child(key), f"{value} is out of range ({lo}..{hi})", FieldCode.OUT_OF_RANGE)
        return value

    def port(self, key: _Str, *, required: _Bool = False) -> _Int | None:
        """A port number 1..65535."""
        return self.int(key, required=required, minimum=1, maximum=65535)

    def int_or_str(self, key: _Str, *, required: _Bool = False) -> _Int | _Str | None:
        """An IntOrString field (e.g. targetPort)."""
        value = self._get(key, required)
        if value is _MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise FieldError(self._child(key), f"expected an integer or a string, got {type_name(value)}",
                             FieldCode.WRONG_TYPE)
        return value

    def bool(self, key: _Str, default: _Bool = False) -> _Bool:
        """A boolean field."""
        value = self._get(key, False)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise FieldError(self._child(key), f"expected true or false, got {type_name(value)} {value!r}",
                             FieldCode.WRONG_TYPE)
        return value

    def map(self, key: _Str, *, required: _Bool = False) -> Fields:
        """A nested mapping as a cursor (empty when absent and not required)."""
        value = self._get(key, required)
        if value is _MISSING:
            return Fields({}, self._child(key))
        if not isinstance(value, Mapping):
            raise FieldError(self._child(key), f"expected a mapping, got {type_name(value)}", FieldCode.WRONG_TYPE)
        return Fields(value, self._child(key))

    def has(self, key: _Str) -> _Bool:
        """True when the key is present and not null."""
        return self.data.get(key) is not None

    def list(self, key: _Str, *, required: _Bool = False) -> _List[Any]:
        """A list field (empty when absent)."""
        value = self._get(key, required)
        if value is _MISSING:
            return []
        if not isinstance(value, list):
            raise FieldError(self._child(key), f"expected a list, got {type_name(value)}", FieldCode.WRONG_TYPE)
        return value

    def maps(self, key: _Str, *, required: _Bool = False) -> _List[Fields]:
        """A list of mappings as cursors."""
        out = []
        for i, item in enumerate(self.list(key, required=required)):
            path = f"{self._child(key)}[{i}]"
            if not isinstance(item, Mapping):
                raise FieldError(path, f"expected a mapping, got {type_name(item)}", FieldCode.WRONG_TYPE)
            out.append(Fields(item, path))
        return out

    def strs(self, key: _Str) -> _List[_Str]:
        """A list of strings."""
        out = []
        for i, item in enumerate(self.list(key)):
            if not isinstance(item, str):
                raise FieldError(f"{self._child(key)}[{i}]", f"expected a string, got {type_name(item)}",
                                 FieldCode.WRONG_TYPE)
            out.append(item)
        return out

    def str_map(self, key: _Str) -> dict[_Str, _Str]:
        """A mapping of strings to strings (e.g. labels, selectors)."""
        value = self._get(key, False)
        if value is _MISSING:
            return {}
        if not isinstance(value, Mapping):
            raise FieldError(self._child(key), f"expected a mapping of strings, got {type_name(value)}",
                             FieldCode.WRONG_TYPE)
        out = {}
        for k, v in value.items():
            if not isinstance(v, str):
                raise FieldError(f"{self._child(key)}.{k}", f"expected a string, got {type_name(v)} {v!r}",
                                 FieldCode.WRONG_TYPE)
            out[str(k)] = v
        return out


def field_diagnostics(obj: KubeObject, error: FieldError | ModelError, prefix: str = "") -> list[Diagnostic]:
    """Every error diagnostic a field error (or :class:`FieldErrors`, or a model error) stands for."""
    if isinstance(error, FieldErrors):
        return [field_diagnostic(obj, e, prefix) for e in error.errors]
    return [field_diagnostic(obj, error, prefix)]


def field_diagnostic(obj: KubeObject, error: FieldError | ModelError, prefix: str = "") -> Diagnostic:
    """Turn a field or model error into an error diagnostic pointing at the field's line."""
    if isinstance(error, FieldError):
        path, code, message = error.path, error.code, error.message
    else:
        path = f"{prefix}.{error.field}" if prefix else error.field
        code, message = FieldCode.MODEL_REJECTED, error.message
    return Diagnostic(code, Severity.ERROR, message, obj.source_at(path), path)

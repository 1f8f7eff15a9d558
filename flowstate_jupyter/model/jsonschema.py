"""JSON Schemas as data: checked, and used to validate values, without fetching or hanging.

Pure functions, no store: check that a schema is a valid JSON Schema of the draft it declares
(2020-12 when it declares none), and validate a value against it with errors that name the JSON
path (``$.replicas[1].port``). Windmill resource types (``windmill/_resource_types.py``) and the
values that resume a suspended run (``flows/durable.py``) use them. ``jsonschema`` is imported
only when a real schema is used: importing it can take seconds where optional format packages
are installed.

A schema is data, so using one fetches nothing, reads no file and cannot hang a writer
(docs/decisions.md, 'JSON Schemas fetch nothing and run in linear time'):

* **References stay inside the schema.** A ``$ref`` / ``$dynamicRef`` resolves only to a part of
  the schema itself (``#/$defs/port``, an ``$anchor``, an embedded ``$id``). Any other reference
  (``http://...``, ``file://...``, ``other.json``, a meta-schema URI) is refused when the type is
  created, and validation runs with a ``referencing`` registry whose retrieve function refuses,
  so not even a type stored by an older version makes a writer open a connection or a file.
* **Regular expressions run in linear time.** ``pattern``, ``patternProperties`` (and the
  ``additionalProperties`` that depends on them) and ``format: "regex"`` are evaluated by RE2
  (``google-re2``), never by Python's backtracking ``re``: ``^(a+)+$`` on ``"aaa...ab"`` takes
  microseconds. A pattern RE2 cannot run (backreferences, look-around, huge repetition counts)
  is refused when the type is created. So is ``unevaluatedProperties`` in a schema that also has
  ``patternProperties``: jsonschema evaluates that combination with ``re``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from ..base.text import clip, short
from ..errors import ValidationError
from . import ops

__all__ = ["check_schema", "json_path", "linear_validator", "schema_errors"]

#: Keywords whose value is a reference to resolve.
_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")


def _schema_error_at(path: Any) -> str:
    segments = list(path)
    return "/".join(str(s) for s in segments) if segments else "(the top)"


# ---------------------------------------------------------------------------- regular expressions

@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (cached); raises ``re2.error`` if RE2 cannot run it."""
    import re2

    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    options.never_capture = True  # only "does it match" is asked
    return re2.compile(pattern, options=options)


def _regex_problem(pattern: str) -> str | None:
    """Why RE2 cannot run ``pattern`` (``None`` when it can)."""
    import re2

    try:
        _regex(pattern)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
    except UnicodeEncodeError:
        return "it holds a lone surrogate, which is not valid Unicode"
    return None


def _is_regex(instance: object) -> bool:
    """``format: "regex"``: a string RE2 can run."""
    return not isinstance(instance, str) or _regex_problem(instance) is None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError as SchemaValidationError

    if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
        yield SchemaValidationError(f"{short(instance, 80)} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict, instance: Any,
                        schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        regex = _regex(pattern)
        for key, value in instance.items():
            if regex.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, additional: Any, instance: Any,
                           schema: dict) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError as SchemaValidationError

    if not validator.is_type(instance, "object"):
        return
    known = schema.get("properties", {})
    regexes = [_regex(p) for p in schema.get("patternProperties", {})]
    extras = [key for key in instance
              if key not in known and not any(r.search(key) for r in regexes)]
    if validator.is_type(additional, "object"):
        for key in extras:
            yield from validator.descend(instance[key], additional, path=key)
    elif not additional and extras:
        names = ", ".join(short(key, 40) for key in sorted(extras)[:10])
        more = f" (and {len(extras) - 10} more)" if len(extras) > 10 else ""
        allowed = " or match patternProperties" if regexes else ""
        yield SchemaValidationError(f"additional properties are not allowed ({names}{more}); "
                                    f"properties must be listed in properties{allowed}")


@functools.cache
def _linear(cls: type) -> type:
    """``cls`` (a jsonschema validator class) with every regular expression run by RE2."""
    from jsonschema import FormatChecker
    from jsonschema.validators import extend

    checker = FormatChecker(())
    checker.checkers.update(cls.FORMAT_CHECKER.checkers)  # type: ignore[attr-defined]
    checker.checks("regex")(_is_regex)
    return extend(cls, {"pattern": _pattern, "patternProperties": _pattern_properties,
                        "additionalProperties": _additional_properties},
                  format_checker=checker)


def _meta_format_checker(cls: type) -> Any:
    """The format checker for checking a schema against its meta-schema: the draft's own, less
    ``regex`` (Python's ``re`` would judge the patterns; :func:`_check_inside` asks RE2)."""
    from jsonschema import FormatChecker

    checker = FormatChecker(())
    draft_checkers = cls.FORMAT_CHECKER.checkers  # type: ignore[attr-defined]
    checker.checkers.update({k: v for k, v in draft_checkers.items() if k != "regex"})
    return checker


# ---------------------------------------------------------------------------- references

def _refuse_retrieval(uri: str) -> Any:
    """The registry's retrieve function: nothing outside the schema is ever fetched or read."""
    from referencing.exceptions import NoSuchResource

    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # an attrs class


@functools.lru_cache(maxsize=1)
def _local_registry() -> Any:
    from referencing import Registry

    return Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]  # an attrs alias


def _locate(schema: Any, keyword: str, value: Any, at: tuple = ()) -> tuple | None:
    """Where in ``schema`` a dict has ``keyword: value`` (for messages); ``None`` if nowhere."""
    if isinstance(schema, dict):
        if schema.get(keyword) == value:
            return at
        items: Any = schema.items()
    elif isinstance(schema, list):
        items = enumerate(schema)
    else:
        return None
    for key, child in items:
        found = _locate(child, keyword, value, (*at, key))
        if found is not None:
            return found
    return None


def _check_inside(where: str, schema: Any) -> None:
    """Refuse references that leave the schema and patterns RE2 cannot run (module doc)."""
    import referencing.jsonschema as rj
    from referencing.exceptions import Unresolvable

    dialect = schema.get("$schema") if isinstance(schema, dict) else None
    spec = rj.specification_with(dialect if isinstance(dialect, str) else
                                 "https://json-schema.org/draft/2020-12/schema",
                                 default=rj.DRAFT202012)
    root = spec.create_resource(schema)
    registry = _local_registry().with_resource(root.id() or "", root)
    keywords_seen: set[str] = set()

    def at(keyword: str, value: Any) -> str:
        return _schema_error_at(_locate(schema, keyword, value) or ())

    def visit(resource: Any, resolver: Any) -> None:
        if resource.id() is not None:
            resolver = resolver.in_subresource(resource)
        contents = resource.contents
        if isinstance(contents, dict):
            keywords_seen.update(k for k in ("patternProperties", "unevaluatedProperties")
                                 if k in contents)
            for keyword in _REF_KEYWORDS:
                ref = contents.get(keyword)
                if not isinstance(ref, str):
                    continue
                try:
                    resolver.lookup(ref)
                except Unresolvable:
                    raise ValidationError(
                        f"{where}: {keyword} {short(ref, 80)} at {at(keyword, ref)} does not "
                        f"point inside the schema; only references within it resolve (e.g. "
                        f"'#/$defs/port'), nothing is fetched from the network or read from "
                        f"disk: copy the referenced schema into $defs",
                        where=where, reason="reference outside the schema") from None
            patterns = [("pattern", contents["pattern"])] \
                if isinstance(contents.get("pattern"), str) else []
            if isinstance(contents.get("patternProperties"), dict):
                patterns += [("patternProperties", p) for p in contents["patternProperties"]]
            for keyword, pattern in patterns:
                problem = _regex_problem(pattern)
                if problem is not None:
                    shown = at(keyword, pattern) if keyword == "pattern" else \
                        _schema_error_at((*(_locate(schema, keyword, contents[keyword]) or ()),
                                          keyword))
                    raise ValidationError(
                        f"{where}: {keyword} {short(pattern, 80)} at {shown} cannot be run in "
                        f"linear time ({problem}); rewrite it without backreferences, "
                        f"look-around or huge repetition counts (RE2 syntax)",
                        where=where, reason="pattern not linear")
        for sub in resource.subresources():
            visit(sub, resolver)

    try:
        visit(root, registry.resolver(base_uri=root.id() or ""))
    except RecursionError:
        raise ValidationError(f"{where}: the schema is nested too deeply to check",
                              where=where, reason="nested too deeply") from None
    if keywords_seen == {"patternProperties", "unevaluatedProperties"}:
        raise ValidationError(
            f"{where}: the schema uses unevaluatedProperties together with patternProperties, "
            f"which cannot be evaluated in linear time here; use additionalProperties (or list "
            f"the properties) instead", where=where, reason="pattern not linear")


# ---------------------------------------------------------------------------- check and validate

def check_schema(schema: Any, *, where: str) -> None:
    """Refuse (:class:`ValidationError` naming ``where``) a schema that is not a valid JSON
    Schema of the draft it declares (default 2020-12), that refers outside itself, or whose
    regular expressions RE2 cannot run."""
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import Draft202012Validator, validator_for

    if not isinstance(schema, (dict, bool)):
        raise ValidationError(f"{where}: the schema must be a JSON Schema dict, not "
                              f"{type(schema).__name__}", where=where, reason="not a schema")
    ops.check_json(schema, where=where)
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema, format_checker=_meta_format_checker(cls))
    except SchemaError as exc:
        raise ValidationError(
            f"{where}: the schema is not a valid JSON Schema ({cls.__name__}): at "
            f"{_schema_error_at(exc.absolute_path)}: {clip(exc.message)}",
            where=where, path=tuple(exc.absolute_path), reason=exc.message) from None
    except RecursionError:
        raise ValidationError(f"{where}: the schema is nested too deeply to check",
                              where=where, reason="nested too deeply") from None
    _check_inside(where, schema)


def json_path(path: Any) -> str:
    """A field path as JSONPath: ``("hosts", 1, "port")`` -> ``$.hosts[1].port``."""
    out = "$"
    for segment in path:
        if isinstance(segment, int):
            out += f"[{segment}]"
        elif isinstance(segment, str) and segment.isidentifier():
            out += f".{segment}"
        else:
            out += f"[{short(segment, 60)}]"
    return out


def linear_validator(schema: Any) -> Any:
    """A jsonschema validator of ``schema`` (its draft, default 2020-12) whose references
    resolve only inside it and whose regular expressions run on RE2 (see the module doc). Its
    ``iter_errors`` raises ``referencing.exceptions.Unresolvable`` or ``re2.error`` for a schema
    that breaks those rules."""
    from jsonschema.validators import Draft202012Validator, validator_for

    cls = _linear(validator_for(schema, default=Draft202012Validator))
    return cls(schema, registry=_local_registry(),
               format_checker=cls.FORMAT_CHECKER)  # type: ignore[attr-defined]


def schema_errors(schema: Any, value: Any) -> list:
    """Every way ``value`` breaks ``schema`` (jsonschema errors; empty when it fits).

    References resolve only inside the schema and regular expressions run on RE2 (module doc).
    A schema that breaks those rules (say, one stored before they held) raises
    ``referencing.exceptions.Unresolvable`` or ``re2.error``; a value nested too deeply,
    ``RecursionError``. Callers turn those into their own messages.
    """
    if schema == {} or schema is True:
        return []  # accepts anything; spares importing jsonschema, which is slow
    return list(linear_validator(schema).iter_errors(value))

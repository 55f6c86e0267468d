"""The key-path validation toolkit shared by the configuration and the web config.

A :class:`Ctx` collects every problem of a file as ``key.path: message`` lines
(all problems at once, each naming its key) while section parsers build the
frozen tree; :class:`StrictLoader` reads YAML without duplicate keys.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, Final

import yaml

from stream.config.errors import ConfigError, Secret
from stream.config.files import MAX_SECRET_BYTES, MAX_YAML_BYTES, FileRefused, read_bounded

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_ENV_RE = re.compile(r"^\$\{ENV:([A-Za-z_][A-Za-z0-9_]*)\}$")
_NUMBER_RE = re.compile(r"^[+-]?(\d[\d_]*)?(\.\d*)?([eE][+-]?\d+)?$")
SECRET_KEYS: Final = frozenset({"sasl_password", "ssl_password"})


def format_key_path(path: Iterable[str | int]) -> str:
    """``("models", 1, "features", 0, "type")`` -> ``models[1].features[0].type``.

    >>> format_key_path(["models", 0, "select", "field"])
    'models[0].select.field'
    >>> format_key_path(["source", "kafka", "options", "a.b"])
    "source.kafka.options['a.b']"
    """
    out = ""
    for seg in path:
        if isinstance(seg, int) and not isinstance(seg, bool):
            out += f"[{seg}]"
        elif isinstance(seg, str) and _IDENT_RE.match(seg):
            out += f".{seg}" if out else seg
        else:
            out += f"[{seg!r}]"
    return out or "<top level>"


def parse_dotted_path(text: str) -> tuple[str, ...]:
    r"""Split a dotted key path; ``\.`` is a dot inside a key and ``\\`` a backslash.

    >>> parse_dotted_path("features.income")
    ('features', 'income')
    >>> parse_dotted_path(r"features.rate\.pct")
    ('features', 'rate.pct')

    Raises ValueError (with the reason) on empty segments or bad escapes.
    """
    if not isinstance(text, str):
        raise ValueError("must be a string")
    segments: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1] if i + 1 < len(text) else ""
            if nxt not in (".", "\\"):
                raise ValueError(
                    f"bad escape at character {i + 1}: use '\\.' for a dot inside a key "
                    "and '\\\\' for a backslash"
                )
            cur.append(nxt)
            i += 2
            continue
        if ch == ".":
            segments.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    segments.append("".join(cur))
    if any(seg == "" for seg in segments):
        raise ValueError(
            "has an empty segment; write keys separated by single dots, e.g. features.income"
        )
    return tuple(segments)


# --------------------------------------------------------------------------
# YAML loading
# --------------------------------------------------------------------------
#: most YAML nodes in a document, counting every alias as the whole subtree it stands for
#: (a real configuration has a few thousand; a "billion laughs" alias bomb has billions)
MAX_YAML_NODES: Final = 100_000
#: deepest nesting of YAML collections (a real configuration nests about 6 deep)
MAX_YAML_DEPTH: Final = 64


class YamlLimitError(yaml.YAMLError):
    """A YAML document over :data:`MAX_YAML_NODES` or :data:`MAX_YAML_DEPTH`."""


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys in a mapping (YAML says they are an error),
    and documents whose aliases expand past :data:`MAX_YAML_NODES` nodes, that refer to
    themselves, or that nest deeper than :data:`MAX_YAML_DEPTH`.

    The node graph is measured after it is composed and before anything is constructed:
    composing is linear in the size of the file (which :func:`read_yaml` bounds), while
    constructing and walking the data expands every alias.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._composed = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._composed += 1
        if self._composed > MAX_YAML_NODES:
            raise YamlLimitError(f"more than {MAX_YAML_NODES} YAML nodes (the limit)")
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YamlLimitError(f"nested deeper than {MAX_YAML_DEPTH} levels (the limit)")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        if node is not None:
            expanded_size(node, MAX_YAML_NODES)
        return node


def expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes of the document at ``root`` once every alias is expanded (memoised: linear in
    the distinct nodes); YamlLimitError past ``limit`` or for an alias to its own parent."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise YamlLimitError("an alias refers to a collection that contains it "
                                 "(a recursive structure)")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        if total > limit:
            raise YamlLimitError(
                f"its aliases expand to more than {limit} YAML nodes (the limit; an alias bomb?)")
        sizes[key] = total
        return total

    return size(root)


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, yaml.Mark] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # unhashable key: construct_mapping reports it
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first set on line {first.line + 1}); keep only one",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=True)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    # Built from the problem text and position only: the default str() quotes
    # the offending line, which could hold a secret.
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    text = exc.problem or exc.context or "syntax error"
    if exc.context and exc.problem:
        text = f"{exc.problem} ({exc.context})"
    return where + text


def read_yaml(file: Path, what: str) -> Any:
    """Read and parse the YAML file ``file`` (``what``: the kind of file, for messages).

    Raises :class:`ConfigError` naming the file, with the position of a syntax error but
    never the offending line (it could hold a secret).  The file must be a regular file
    of at most :data:`~stream.config.files.MAX_YAML_BYTES`, and its document within
    :data:`MAX_YAML_NODES` nodes (aliases expanded) and :data:`MAX_YAML_DEPTH` levels.
    """
    raw = read_bounded(file, what, MAX_YAML_BYTES)
    try:
        return yaml.load(raw, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except YamlLimitError as exc:
        raise ConfigError(f"refused: {exc}", source=file) from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(f"not valid YAML: {yaml_problem(exc)}", source=file) from None
    except yaml.YAMLError as exc:
        # ReaderError and friends: bad encoding or control characters
        raise ConfigError(f"not valid YAML: {exc}", source=file) from None
    except RecursionError:  # not reached within MAX_YAML_DEPTH; a last guard
        raise ConfigError("refused: nested too deeply", source=file) from None


# --------------------------------------------------------------------------
# the validator
# --------------------------------------------------------------------------
KeyPath = tuple[Any, ...]  # mapping keys and list indices


class Bad:
    """Placeholder for a value that failed validation (its error is recorded)."""

    def __repr__(self) -> str:
        return "<invalid>"


BAD: Final = Bad()
ABSENT: Final = object()


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def one_of(choices: Iterable[str]) -> str:
    return "must be one of " + ", ".join(choices)


def suggest(word: Any, choices: Iterable[str]) -> str:
    if not isinstance(word, str):
        return ""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


class Ctx:
    def __init__(self, base_dir: Path, environ: Mapping[str, str]):
        self.base_dir = base_dir
        self.environ = environ
        self._errors: list[tuple[KeyPath, str, bool]] = []

    def error(self, path: KeyPath, message: str, *, env: bool = False) -> Bad:
        self._errors.append((path, message, env))
        return BAD

    @property
    def errors(self) -> list[str]:
        """The messages; none about values that an ``${ENV:...}`` error already names."""
        failed = [p for p, _, env in self._errors if env]
        return [
            f"{format_key_path(path)}: {message}"
            for path, message, env in self._errors
            if env or not any(path[: len(f)] == f for f in failed)
        ]

    # -- structure ---------------------------------------------------------
    def section(
        self, value: Any, path: KeyPath, known: Sequence[str], what: str = ""
    ) -> dict[str, Any] | None:
        """A mapping with only known keys; None (error recorded) if not a mapping."""
        if value is None or value is ABSENT:
            return {}
        if not isinstance(value, Mapping):
            example = f", e.g. {what}" if what else ""
            self.error(
                path,
                f"must be a mapping with keys {', '.join(known)}{example}; got {type_name(value)}",
            )
            return None
        for key in value:
            if key not in known:
                self.error(
                    path + (key,),
                    f"unknown key{suggest(key, known)}; known keys here: {', '.join(known)}",
                )
        return {k: v for k, v in value.items() if isinstance(k, str) and k in known}

    # -- scalars -----------------------------------------------------------
    def string(
        self,
        value: Any,
        path: KeyPath,
        *,
        choices: Sequence[str] | None = None,
        allow_empty: bool = False,
    ) -> str | Bad:
        if not isinstance(value, str):
            hint = f"; {one_of(choices)}" if choices else ""
            return self.error(path, f"must be a string, got {type_name(value)}{hint}")
        if choices is not None and value not in choices:
            return self.error(path, f"{one_of(choices)}, got {value!r}{suggest(value, choices)}")
        if not allow_empty and not value.strip():
            return self.error(path, "must not be empty")
        return value

    def integer(
        self, value: Any, path: KeyPath, lo: int | None = None, hi: int | None = None
    ) -> int | Bad:
        number = self._number(value)
        if number is None or not math.isfinite(number) or number != int(number):
            return self.error(path, f"must be an integer{int_range(lo, hi)}, got {show(value)}")
        result = int(number) if not isinstance(value, int) else value
        if (lo is not None and result < lo) or (hi is not None and result > hi):
            return self.error(path, f"must be an integer{int_range(lo, hi)}, got {result}")
        return result

    def real(self, value: Any, path: KeyPath, *, minimum: float, strict: bool) -> float | Bad:
        number = self._number(value)
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        if number is None or not math.isfinite(number):
            return self.error(path, f"must be a finite number {bound}, got {show(value)}")
        if number < minimum or (strict and number == minimum):
            return self.error(path, f"must be a number {bound}, got {number:g}")
        return float(number)

    @staticmethod
    def _number(value: Any) -> float | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return value
        # quoted numbers, ${ENV:...} values and PyYAML's "1e7" (a string in YAML 1.1)
        if isinstance(value, str) and value.strip() and _NUMBER_RE.match(value.strip()):
            text = value.strip().replace("_", "")
            try:
                return int(text) if text.lstrip("+-").isdigit() else float(text)
            except ValueError:
                return None
        return None

    def key_path(self, value: Any, path: KeyPath) -> tuple[str, ...] | Bad:
        if not isinstance(value, str):
            return self.error(
                path,
                f"must be a dotted key path string such as features.income, got {type_name(value)}",
            )
        try:
            return parse_dotted_path(value)
        except ValueError as exc:
            return self.error(path, f"{exc} (got {value!r})")

    def file_path(self, value: Any, path: KeyPath, *, must_exist: bool) -> Path | Bad:
        if not isinstance(value, str) or not value.strip():
            return self.error(path, f"must be a file path string, got {type_name(value)}")
        resolved = self.base_dir / Path(value).expanduser()
        if must_exist:
            if not resolved.exists():
                return self.error(
                    path,
                    f"file not found: {resolved} (relative paths are relative to the configuration file)",
                )
            if not resolved.is_file():
                return self.error(path, f"not a regular file: {resolved}")
        return resolved

    def secret(self, value: Any, path: KeyPath) -> Secret | Bad:
        # Never quote the value in these messages.
        if isinstance(value, str):
            if not value:
                return self.error(
                    path, "must not be empty (is the environment variable set but empty?)"
                )
            return Secret(value)
        if isinstance(value, Mapping):
            spec = self.section(value, path, ("file",), "{file: /run/secrets/kafka-password}")
            if spec is None:
                return BAD
            if "file" not in spec or spec["file"] is None:
                return self.error(
                    path + ("file",), "required: the path of a file holding the secret"
                )
            file = self.file_path(spec["file"], path + ("file",), must_exist=False)
            if isinstance(file, Bad):
                return BAD
            try:
                text = read_bounded(file, "secret", MAX_SECRET_BYTES).decode("utf-8")
            except FileRefused as exc:
                return self.error(path + ("file",), exc.errors[0])
            except UnicodeDecodeError:
                return self.error(path + ("file",), f"secret file is not UTF-8 text: {file}")
            text = text.rstrip("\r\n")
            if not text:
                return self.error(path + ("file",), f"secret file is empty: {file}")
            return Secret(text)
        return self.error(
            path, f"must be a string, ${{ENV:NAME}} or {{file: PATH}}, got {type_name(value)}"
        )

    # -- environment ---------------------------------------------------------
    def substitute_env(self, value: Any, path: KeyPath) -> Any:
        if isinstance(value, str):
            if "${ENV:" not in value:
                return value
            match = _ENV_RE.match(value)
            is_secret = bool(path) and path[-1] in SECRET_KEYS
            if match is None:
                shown = "" if is_secret else f" (got {value!r})"
                self.error(
                    path,
                    "${ENV:NAME} must be the whole value, with NAME made of letters, digits "
                    f"and underscores{shown}",
                    env=True,
                )
                return BAD
            name = match.group(1)
            if name not in self.environ:
                self.error(
                    path,
                    f"environment variable {name} is not set (referenced as ${{ENV:{name}}})",
                    env=True,
                )
                return BAD
            return self.environ[name]
        if isinstance(value, Mapping):
            return {k: self.substitute_env(v, path + (k,)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.substitute_env(v, path + (i,)) for i, v in enumerate(value)]
        return value


def int_range(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f" in {lo}..{hi}"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:40] + "...")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return type_name(value)


def get_key(section: Mapping[str, Any], key: str) -> Any:
    """The value at ``key``, or ABSENT when the key is missing or null."""
    value = section.get(key, ABSENT)
    return ABSENT if value is None else value


def default_of(cls: type, name: str) -> Any:
    """The default of a dataclass field (slots dataclasses keep it only in fields())."""
    for f in fields(cls):
        if f.name == name:
            return f.default
    raise AttributeError(name)


def any_bad(*values: Any) -> bool:
    return any(isinstance(v, Bad) for v in values)


# --------------------------------------------------------------------------
# sections

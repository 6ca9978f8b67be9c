"""Aggregates to rows and back, declared once per aggregate (SQLAlchemy Core; the domain stays plain).

A field of a domain class (a keyword of its constructor) maps by default to the column of the same
name, an enum to its value (found from the type hints). Anything else is declared in the mapping: a
value object flattened into its own columns (``Embedded``), a JSON text column (``Json``), values in
a child table (``Children``), append-only child rows (``Appended``), or no column at all
(``exclude``). Building a mapping checks that every field and every column is accounted for: a new
field without a column (or a column without a field) fails at import, not in production.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import attrgetter, itemgetter
from typing import Any, Generic, NamedTuple, Protocol, TypeVar, Union, get_args, get_origin, get_type_hints

import msgspec
from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")
Row = Mapping[Any, Any]  # a result row's ._mapping

STAMPED = "updated_at"  # set to the commit time on every write, where the table has it


_NONE_OWNED: dict[str, Any] = {}  # shared, never written


class MappingError(TypeError):
    """A mapping that would lose a field or leave a column unwritten."""


class State(NamedTuple):
    """What an aggregate looks like in the database: its row and its owned child values."""

    row: dict[str, Any]
    owned: dict[str, Any]


def _optional(hint: Any) -> tuple[Any, bool]:
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _enum(hint: Any) -> type[enum.Enum] | None:
    base, _ = _optional(hint)
    return base if isinstance(base, type) and issubclass(base, enum.Enum) else None


class _Field(Protocol):
    attr: str
    columns: tuple[str, ...]

    def dump(self, value: Any, row: dict[str, Any]) -> None: ...

    def load(self, row: Row) -> Any: ...


class _Column:
    """A field stored as it is, an enum as its value."""

    def __init__(self, attr: str, column: str, hint: Any) -> None:
        self.attr, self._column = attr, column
        self.columns: tuple[str, ...] = (column,)
        self._enum = _enum(hint)
        # value -> member by dict: several times cheaper than calling the enum class per row
        self._members: dict[Any, Any] | None = (
            dict(self._enum._value2member_map_) if self._enum is not None else None
        )
        self.plain = self._enum is None and attr == column

    def dump(self, value: Any, row: dict[str, Any]) -> None:
        row[self._column] = value.value if self._enum is not None and value is not None else value

    def load(self, row: Row) -> Any:
        value = row[self._column]
        if self._members is None or value is None:
            return value
        member = self._members.get(value)
        return member if member is not None else self._enum(value)  # type: ignore[misc]  # raises


class _Codec:
    """Fields to row values and back: the plain columns (most) in one C-level call each way."""

    def __init__(self, fields: Sequence[_Field]) -> None:
        plain = [f.attr for f in fields if isinstance(f, _Column) and f.plain]
        self._plain = tuple(plain)
        # The first name repeated: a getter of one name would return a value, not a tuple.
        self._attrs = attrgetter(*plain, plain[0]) if plain else lambda _: ()
        self._items = itemgetter(*plain, plain[0]) if plain else lambda _: ()
        self._converted = [f for f in fields if not (isinstance(f, _Column) and f.plain)]

    def dump(self, obj: Any, row: dict[str, Any]) -> None:
        row.update(zip(self._plain, self._attrs(obj), strict=False))
        for f in self._converted:
            f.dump(getattr(obj, f.attr), row)

    def load(self, row: Row) -> dict[str, Any]:
        values = dict(zip(self._plain, self._items(row), strict=False))
        for f in self._converted:
            values[f.attr] = f.load(row)
        return values


class Spec(Protocol):
    def bind(self, attr: str, hint: Any) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Embedded:
    """A value object flattened into the columns named after its fields (each after ``prefix``);
    ``X | None`` is None when the first of them is null."""

    prefix: str = ""

    def bind(self, attr: str, hint: Any) -> _Field:
        return _Embedded(attr, hint, self.prefix)


class _Embedded:
    def __init__(self, attr: str, hint: Any, prefix: str = "") -> None:
        self.attr = attr
        self._cls, self._optional = _optional(hint)
        hints = get_type_hints(self._cls)
        fields = [_Column(f.name, prefix + f.name, hints[f.name]) for f in dataclasses.fields(self._cls)]
        self.columns = tuple(column for f in fields for column in f.columns)
        self._codec = _Codec(fields)

    def dump(self, value: Any, row: dict[str, Any]) -> None:
        if value is None:
            row.update(dict.fromkeys(self.columns))
        else:
            self._codec.dump(value, row)

    def load(self, row: Row) -> Any:
        if self._optional and row[self.columns[0]] is None:
            return None
        return self._cls(**self._codec.load(row))


@dataclasses.dataclass(frozen=True)
class Json:
    """A field stored as JSON text (msgspec, typed from the hint: dataclasses, datetimes...)."""

    def bind(self, attr: str, hint: Any) -> _Field:
        return _Json(attr, hint)


class _Json:
    _encoder = msgspec.json.Encoder()

    def __init__(self, attr: str, hint: Any) -> None:
        self.attr = attr
        self.columns: tuple[str, ...] = (attr,)
        self._decoder = msgspec.json.Decoder(hint)

    def dump(self, value: Any, row: dict[str, Any]) -> None:
        row[self.attr] = self._encoder.encode(value).decode()

    def load(self, row: Row) -> Any:
        return self._decoder.decode(row[self.attr])


@dataclasses.dataclass(frozen=True)
class Children:
    """A list of values kept in a child table (``key`` refers to the aggregate's id), loaded with the
    aggregate and replaced when changed; a change alone bumps the aggregate's version."""

    table: Table
    key: str
    value: str

    def bind(self, attr: str, hint: Any) -> _Children:
        return _Children(attr, self)


class _Children:
    def __init__(self, attr: str, spec: Children) -> None:
        self.attr, c = attr, spec.table.c
        self._key, self._value = spec.key, spec.value
        self.insert = insert(spec.table)
        self.delete = delete(spec.table).where(c[spec.key] == bindparam("parent"))
        self.select = (
            select(c[spec.key], c[spec.value])
            .where(c[spec.key].in_(bindparam("parents", expanding=True)))
            .order_by(c[spec.key], c[spec.value])
        )

    def state(self, values: Iterable[Any]) -> tuple[Any, ...]:
        return tuple(sorted(values))

    async def load(self, conn: AsyncConnection, parents: Sequence[str]) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {parent: [] for parent in parents}
        for parent, value in await conn.execute(self.select, {"parents": list(parents)}):
            found[parent].append(value)
        return found

    async def write(
        self, conn: AsyncConnection, parent: str, values: tuple[Any, ...], *, replace: bool
    ) -> None:
        if replace:
            await conn.execute(self.delete, {"parent": parent})
        if values:
            await conn.execute(self.insert, [{self._key: parent, self._value: v} for v in values])


@dataclasses.dataclass(frozen=True)
class Appended:
    """A list of new child rows (dataclasses mapped by ``RowMapping``) inserted with the aggregate and
    cleared once committed; never loaded with it."""

    table: Table

    def bind(self, attr: str, hint: Any) -> _Appended:
        (item,) = get_args(hint)
        return _Appended(attr, RowMapping(item, self.table))


class _Appended:
    def __init__(self, attr: str, rows: RowMapping[Any]) -> None:
        self.attr, self.rows = attr, rows

    async def write(self, conn: AsyncConnection, items: list[Any]) -> None:
        if items:
            await conn.execute(self.rows.insert, [self.rows.dump(item) for item in items])


def _init_fields(cls: type) -> tuple[list[str], dict[str, Any]]:
    hints = get_type_hints(cls if dataclasses.is_dataclass(cls) else cls.__init__)  # type: ignore[misc]
    return [p for p in inspect.signature(cls).parameters], hints


class RowMapping(Generic[T]):
    """One class to one table row: every constructor field to its columns, every column from a field."""

    def __init__(
        self,
        cls: type[T],
        table: Table,
        *,
        fields: Mapping[str, Spec] | None = None,
        exclude: Iterable[str] = (),
        unmapped_columns: Iterable[str] = (),
    ) -> None:
        self.cls, self.table = cls, table
        specs, excluded = dict(fields or {}), set(exclude)
        names, hints = _init_fields(cls)
        if unknown := (set(specs) | excluded) - set(names):
            raise MappingError(f"{cls.__name__} has no fields {sorted(unknown)}")
        self.fields: list[_Field] = []
        self.children: list[_Children] = []
        self.appended: list[_Appended] = []
        for name in names:
            if name in excluded:
                continue
            if name in specs:
                bound = specs[name].bind(name, hints[name])
                if isinstance(bound, _Children):
                    self.children.append(bound)
                elif isinstance(bound, _Appended):
                    self.appended.append(bound)
                else:
                    self.fields.append(bound)
            elif name in table.c:
                self.fields.append(_Column(name, name, hints[name]))
            else:
                raise MappingError(
                    f"{cls.__name__}.{name} has no column {table.name}.{name}: add one (and a migration),"
                    " or declare the field in its mapping"
                )
        written = {column for f in self.fields for column in f.columns}
        if unwritten := set(table.c.keys()) - written - set(unmapped_columns):
            raise MappingError(f"{table.name} columns {sorted(unwritten)} map to no field of {cls.__name__}")
        self.insert = insert(table)
        self._make: Callable[..., T] = cls
        self._codec = _Codec(self.fields)

    def dump(self, obj: T) -> dict[str, Any]:
        row: dict[str, Any] = {}
        self._codec.dump(obj, row)
        return row

    def load(self, row: Row, owned: Mapping[str, Any] | None = None) -> T:
        values = self._codec.load(row)
        for child in self.children:
            values[child.attr] = list(owned[child.attr] if owned else ())
        return self._make(**values)


class AggregateMapping(RowMapping[T]):
    """A RowMapping of an aggregate (``id``, ``version``, ``events``): its versioned update statement,
    its child tables. ``events`` are no column: they go to the outbox."""

    def __init__(
        self,
        cls: type[T],
        table: Table,
        *,
        fields: Mapping[str, Spec] | None = None,
        exclude: Iterable[str] = (),
        derived: Iterable[str] = (),
    ) -> None:
        """``derived``: columns of no field, written by the repository (``Repository.derived``)."""
        names, _ = _init_fields(cls)
        exclude = {*exclude, *({"events"} & set(names))}
        derived = tuple(derived)
        super().__init__(cls, table, fields=fields, exclude=exclude, unmapped_columns=[STAMPED, *derived])
        self.stamped = STAMPED in table.c
        self.derived = tuple(derived)
        c = table.c
        self.update = update(table).where(
            c.id == bindparam("loaded_id"), c.version == bindparam("loaded_version")
        )
        self.by_id = select(table).where(c.id == bindparam("id"))

    def state(self, aggregate: T) -> State:
        if not self.children:
            return State(self.dump(aggregate), _NONE_OWNED)
        owned = {child.attr: child.state(getattr(aggregate, child.attr)) for child in self.children}
        return State(self.dump(aggregate), owned)

    async def load_children(
        self, conn: AsyncConnection, ids: Sequence[str]
    ) -> dict[str, dict[str, list[Any]]]:
        if not ids or not self.children:
            return {}
        return {child.attr: await child.load(conn, ids) for child in self.children}

    def owned(
        self, aggregate_id: str, children: Mapping[str, Mapping[str, list[Any]]]
    ) -> dict[str, Any] | None:
        return {attr: found[aggregate_id] for attr, found in children.items()} if children else None

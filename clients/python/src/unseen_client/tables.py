"""Released tables as pandas DataFrames and Arrow tables.

A released table is ``{"rows": N, "columns": [{"name", "values"}]}``. A
column of noisy values holds ``{"value", "lower", "upper"}`` objects: the
estimate and its confidence interval. Such a column ``x`` becomes three
columns, ``x``, ``x_lower`` and ``x_upper`` (the names a release has when
a later query reads it back as a table), so the bounds travel with the
values through any DataFrame or Arrow tooling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Mapping, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    import pandas
    import pyarrow  # type: ignore[import-untyped]

__all__ = ["ColumnKind", "ReleasedColumn", "columns_of", "table_to_pandas", "table_to_arrow"]

#: How a released column is read: text, whole numbers, floats, or
#: estimates with their interval.
ColumnKind = Literal["text", "int", "float", "estimate"]


@dataclass(frozen=True)
class ReleasedColumn:
    name: str
    kind: ColumnKind
    #: For ``estimate`` columns, the estimates; for the others, the cells.
    values: Tuple[Any, ...]

    @property
    def names(self) -> Tuple[str, ...]:
        """The names this column has in a DataFrame."""
        if self.kind == "estimate":
            return (self.name, f"{self.name}_lower", f"{self.name}_upper")
        return (self.name,)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _float(x: Any) -> float:
    return float(x) if _number(x) else math.nan


def columns_of(table: Mapping[str, Any]) -> List[ReleasedColumn]:
    """The columns of a released table with their kinds: all strings is
    text, all objects estimates, all whole numbers ints, other numbers
    (and ``null``, the service's form of a non-finite float) floats."""
    raw = table.get("columns")
    if not isinstance(raw, list):
        raise ValueError("a released table needs a `columns` list")
    out: List[ReleasedColumn] = []
    seen: Dict[str, str] = {}
    for c in raw:
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not isinstance(c.get("values"), list):
            raise ValueError("each column of a released table needs a `name` and a `values` list")
        name: str = c["name"]
        cells: List[Any] = c["values"]
        kind: ColumnKind
        if all(isinstance(x, str) for x in cells):
            kind = "text"
            values: Tuple[Any, ...] = tuple(cells)
        elif all(isinstance(x, dict) for x in cells):
            kind = "estimate"
            values = tuple((_float(x.get("value")), _float(x.get("lower")), _float(x.get("upper"))) for x in cells)
        elif all(isinstance(x, int) and not isinstance(x, bool) for x in cells):
            kind = "int"
            values = tuple(cells)
        elif all(x is None or _number(x) for x in cells):
            kind = "float"
            values = tuple(_float(x) for x in cells)
        else:
            raise ValueError(f"column `{name}` mixes kinds of values")
        col = ReleasedColumn(name, kind, values)
        for n in col.names:
            if n in seen:
                raise ValueError(f"column name `{n}` would appear twice (from `{seen[n]}` and `{name}`)")
            seen[n] = name
        out.append(col)
    lengths = {len(c.values) for c in out}
    if len(lengths) > 1:
        raise ValueError("the columns of the released table have different lengths")
    return out


def table_to_pandas(table: Mapping[str, Any]) -> "pandas.DataFrame":
    """A DataFrame with one column per released column, and for each column
    of estimates ``<name>``, ``<name>_lower`` and ``<name>_upper``: whole
    numbers are ``int64``, estimates and other numbers ``float64``, text
    pandas' string type (through Arrow, so both forms agree)."""
    frame: "pandas.DataFrame" = table_to_arrow(table).to_pandas()
    return frame


def table_to_arrow(table: Mapping[str, Any], metadata: Optional[Mapping[str, str]] = None) -> "pyarrow.Table":
    """An Arrow table of the same columns as :func:`table_to_pandas`. Each
    field of an estimate says so in its metadata (``unseen.estimate``: the
    released column, ``unseen.part``: ``value``, ``lower`` or ``upper``)."""
    import pyarrow as pa

    arrays: List[Any] = []
    fields: List[Any] = []
    for col in columns_of(table):
        if col.kind == "estimate":
            for i, (n, part) in enumerate(zip(col.names, ("value", "lower", "upper"))):
                arrays.append(pa.array([e[i] for e in col.values], type=pa.float64()))
                fields.append(pa.field(n, pa.float64(), metadata={"unseen.estimate": col.name, "unseen.part": part}))
        else:
            typ = {"text": pa.string(), "int": pa.int64(), "float": pa.float64()}[col.kind]
            arrays.append(pa.array(list(col.values), type=typ))
            fields.append(pa.field(col.name, typ))
    schema = pa.schema(fields, metadata=dict(metadata) if metadata else None)
    return pa.Table.from_arrays(arrays, schema=schema)

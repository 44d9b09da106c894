"""One request's expressions and their placeholders (ExpressionAttributeNames and -Values).

Every attribute name goes through a ``#n<i>`` placeholder, so neither a reserved word (status,
next, ...) nor an odd character (a bot counter named ``<form>:<reason>``) can break an
expression; every value through a ``:v<i>`` one. A name used twice keeps one placeholder;
DynamoDB refuses a request carrying a placeholder its expressions do not use, so only what a
method below wrote is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, Union

from chalicelib.store.codec import serialize

# An attribute, or the path to one inside a map: ("consent", "status").
Path = Union[str, tuple[str, ...]]


class Expression:
    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self._sets: list[str] = []
        self._removes: list[str] = []
        self._adds: list[str] = []
        self._deletes: list[str] = []

    # -- placeholders ---------------------------------------------------------------------------

    def name(self, path: Path) -> str:
        parts = (path,) if isinstance(path, str) else path
        return ".".join(self._name(part) for part in parts)

    def _name(self, attribute: str) -> str:
        for placeholder, named in self.names.items():
            if named == attribute:
                return placeholder
        placeholder = f"#n{len(self.names)}"
        self.names[placeholder] = attribute
        return placeholder

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = value
        return placeholder

    # -- updates ----------------------------------------------------------------------------------

    def set(self, path: Path, value: Any) -> Expression:
        return self._clause(self._sets, f"{self.name(path)} = {self.value(value)}")

    def set_if_absent(self, path: Path, value: Any) -> Expression:
        """Set unless already there: what the first write decided stays."""
        name = self.name(path)
        return self._clause(self._sets, f"{name} = if_not_exists({name}, {self.value(value)})")

    def increment(self, path: Path, by: Any, start: Any) -> Expression:
        """``start + by`` on an item without the attribute."""
        name = self.name(path)
        return self._clause(self._sets, f"{name} = if_not_exists({name}, {self.value(start)}) + {self.value(by)}")

    def remove(self, *paths: Path) -> Expression:
        return self._clause(self._removes, *(self.name(path) for path in paths))

    def add(self, path: Path, value: Any) -> Expression:
        """ADD: a number added, or members added to a set."""
        return self._clause(self._adds, f"{self.name(path)} {self.value(value)}")

    def delete(self, path: Path, members: Any) -> Expression:
        """DELETE: members taken out of a set (those it lacks, or a set it lacks, are no error)."""
        return self._clause(self._deletes, f"{self.name(path)} {self.value(members)}")

    def set_all(self, attributes: Mapping[str, Any]) -> Expression:
        for attribute, value in attributes.items():
            self.set(attribute, value)
        return self

    def add_all(self, attributes: Mapping[str, Any]) -> Expression:
        for attribute, value in attributes.items():
            self.add(attribute, value)
        return self

    def _clause(self, clause: list[str], *parts: str) -> Expression:
        clause.extend(parts)
        return self

    def update(self) -> str:
        clauses = (("SET", self._sets), ("REMOVE", self._removes), ("ADD", self._adds), ("DELETE", self._deletes))
        return " ".join(f"{verb} {', '.join(parts)}" for verb, parts in clauses if parts)

    # -- conditions (key conditions and filters alike) -------------------------------------------

    def exists(self, path: Path = "pk") -> str:
        return f"attribute_exists({self.name(path)})"

    def absent(self, path: Path = "pk") -> str:
        return f"attribute_not_exists({self.name(path)})"

    def compare(self, path: Path, operator: str, value: Any) -> str:
        return f"{self.name(path)} {operator} {self.value(value)}"

    def eq(self, path: Path, value: Any) -> str:
        return self.compare(path, "=", value)

    def begins_with(self, path: Path, prefix: str) -> str:
        return f"begins_with({self.name(path)}, {self.value(prefix)})"

    def between(self, path: Path, low: Any, high: Any) -> Optional[str]:
        """``low <= path <= high``, either end open when None; None when both are."""
        if low is None and high is None:
            return None
        if low is None:
            return self.compare(path, "<=", high)
        if high is None:
            return self.compare(path, ">=", low)
        return f"{self.name(path)} BETWEEN {self.value(low)} AND {self.value(high)}"

    # -- the request ------------------------------------------------------------------------------

    def params(self, **expressions: Optional[str]) -> dict[str, Any]:
        """The request's expressions (``ConditionExpression=...``, ``KeyConditionExpression=...``;
        the update written above as ``UpdateExpression``) with the placeholders they use."""
        params: dict[str, Any] = {name: text for name, text in expressions.items() if text}
        if self.update():
            params["UpdateExpression"] = self.update()
        if self.names:
            params["ExpressionAttributeNames"] = dict(self.names)
        if self.values:
            params["ExpressionAttributeValues"] = serialize(self.values)
        return params


def all_of(*conditions: Optional[str]) -> Optional[str]:
    """The conditions joined by AND (those that are None left out); None when none is left."""
    present = [c for c in conditions if c]
    return " AND ".join(present) if present else None


def any_of(*conditions: Optional[str]) -> str:
    """The conditions joined by OR, in parentheses: it can stand in an AND."""
    return "(" + " OR ".join(f"({c})" for c in conditions if c) + ")"

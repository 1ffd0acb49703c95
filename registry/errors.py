"""The one error type a user can cause through a spec, and its one-line format."""

from __future__ import annotations


MAX_MESSAGE = 600  # characters of one error line; a longer message (a huge bad value) is cut


def short(value, limit: int = 120) -> str:
    """repr(value), cut to `limit` characters: error lines name a bad value, never repeat a huge one."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


class SpecError(Exception):
    """A problem with a spec file, a catalog entry or a command-line override.

    Rendered as one line: ``<where>: <field path>: <what was expected>``.
    """

    def __init__(self, message: str, where: str | None = None, field: str | None = None):
        self.message = message
        self.where = where
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.where, self.field) if p]
        line = ": ".join([*parts, self.message]).replace("\n", " ")
        return line if len(line) <= MAX_MESSAGE else f"{line[:MAX_MESSAGE]}... (cut; {len(line):,} characters)"

    def located(self, where: str) -> "SpecError":
        """The same error, attributed to ``where`` unless it already names a place."""
        return self if self.where else SpecError(self.message, where, self.field)


def format_validation_error(exc, where: str | None = None, tag: str | None = None) -> SpecError:
    """Turn a pydantic ValidationError into a SpecError naming the first bad field.

    `tag` is the discriminator value (the spec's kind), which pydantic puts first in every
    error location; it is dropped so fields read as they are written in the file. Every error
    is kept on the same line, separated by '; ', so nothing is hidden.
    """
    messages = []
    first_field = None
    for err in exc.errors():
        parts = list(err["loc"])
        if tag is not None and parts[:1] == [tag]:
            parts = parts[1:]
        loc = ".".join(str(p) for p in parts if not _is_union_tag(p))
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            # the discriminator field: `kind` for the spec itself, e.g. `mapping.name` inside it
            key = str(err.get("ctx", {}).get("discriminator", "'kind'")).strip("'")
            loc = f"{loc}.{key}" if loc else key
        msg = _describe(err)
        if first_field is None:
            first_field = loc or None
            messages.append(msg)
        else:
            messages.append(f"{loc}: {msg}" if loc else msg)
    return SpecError("; ".join(messages), where, first_field)


def _is_union_tag(part) -> bool:
    # pydantic inserts the discriminator value / function names into error locations
    return isinstance(part, str) and (part.startswith("function-") or part.endswith("]"))


def _describe(err: dict) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field (not part of this spec kind; check the spelling or `harness schema`)"
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        key = str(ctx.get("discriminator", "'kind'")).strip("'")
        return f"unknown {key} {ctx.get('tag')!r} (expected one of: {ctx.get('expected_tags')})"
    if kind == "union_tag_not_found":
        key = str(err.get("ctx", {}).get("discriminator", "'kind'")).strip("'")
        return "the spec has no `kind` field" if key == "kind" else f"`{key}` is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    inp = err.get("input")
    if kind not in ("value_error", "assertion_error") and not isinstance(inp, (dict, list)):
        msg = f"{msg} (got {short(inp)})"
    return msg

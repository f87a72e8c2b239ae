"""The one sandboxed Jinja2 environment for templates and conditions. Core: reads template
files through Jinja's loader, nothing else.

* Sandboxed and immutable: a template cannot call methods that change data, reach private
  attributes or import anything.
* Strict: an undefined variable is an error, never an empty string in a customer's inbox.
* HTML templates (``.html``) are autoescaped; text, SMS and push are not.
* Mappings expose their keys, not their methods: ``event.items`` is the cart's item list, not
  ``dict.items``.

Template files per channel (``NAME`` is what a journey's ``send.template`` says):

=======  ===============================================================================
email    ``email/NAME.html`` (extends ``layouts/email.html``, defines ``subject``) and
         ``email/NAME.txt`` (the plain-text part, extends ``layouts/email.txt``)
sms      ``sms/NAME.txt``
push     ``push/NAME.txt`` defining the blocks ``title`` and ``body`` (optional ``link``)
=======  ===============================================================================
"""

from __future__ import annotations

import html as _html
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    nodes,
)
from jinja2.runtime import new_context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from .errors import RenderError
from .segments import sms_size

TEMPLATE_FILES: dict[str, tuple[str, ...]] = {
    "email": ("email/{name}.html", "email/{name}.txt"),
    "sms": ("sms/{name}.txt",),
    "push": ("push/{name}.txt",),
}
REQUIRED_BLOCKS: dict[str, tuple[str, ...]] = {
    "email/{name}.html": ("subject",),
    "push/{name}.txt": ("title", "body"),
}
MESSAGE_NAMES = frozenset(
    {"user", "event", "trigger", "journey", "step", "variant", "now", "unsubscribe_url"}
)
CONDITION_NAMES = frozenset({"user", "event", "trigger", "journey", "now"})

_ZERO_DECIMAL = frozenset({"JPY", "KRW", "VND", "CLP", "ISK", "HUF", "TWD", "UGX"})
_CURRENCY = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹", "BRL": "R$"}


def _money(amount: Any, currency: str = "USD") -> str:
    try:
        value = float(amount)
    except (TypeError, ValueError):
        return str(amount)
    code = str(currency).upper()
    symbol = _CURRENCY.get(code)
    digits = 0 if code in _ZERO_DECIMAL else 2
    return f"{symbol}{value:,.{digits}f}" if symbol else f"{value:,.{digits}f} {code}"


class JourneyEnvironment(ImmutableSandboxedEnvironment):
    """Sandboxed, strict, and item-first for mappings (see module docstring)."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping):
            if attribute in obj:
                return obj[attribute]
            return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


def _finalize(value: Any) -> Any:
    if value is None:
        raise RenderError(
            "the template prints an empty value (an attribute this user does not have?); "
            "use | default('...') or {% if ... %}"
        )
    return value


def make_environment(loader: BaseLoader | None = None) -> JourneyEnvironment:
    env = JourneyEnvironment(
        finalize=_finalize,
        auto_reload=False,  # templates are read once per process; a deploy restarts workers
        loader=loader,
        undefined=StrictUndefined,
        autoescape=lambda name: bool(name and name.endswith(".html")),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["money"] = _money
    return env


@dataclass(frozen=True)
class Rendered:
    """A message ready for a channel. ``subject`` is the email subject or the push title."""

    channel: str
    subject: str | None
    body: str
    html: str | None = None
    link: str | None = None
    segments: int | None = None
    encoding: str | None = None


class Renderer:
    """Renders messages from a templates folder; compiled templates are cached."""

    def __init__(self, templates_dir: str | Path) -> None:
        self.templates_dir = Path(templates_dir)
        self.env = make_environment(FileSystemLoader(str(self.templates_dir)))

    def missing_files(self, channel: str, name: str) -> list[str]:
        """The template files a channel needs for ``name`` that are missing."""
        return [
            pattern.format(name=name)
            for pattern in TEMPLATE_FILES[channel]
            if not (self.templates_dir / pattern.format(name=name)).is_file()
        ]

    def render(self, channel: str, name: str, context: Mapping[str, Any]) -> Rendered:
        try:
            if channel == "email":
                html_t = self.env.get_template(f"email/{name}.html")
                text_t = self.env.get_template(f"email/{name}.txt")
                # The subject is a mail header, i.e. plain text: undo the HTML autoescape
                # the .html file applies, or "O'Brien" would arrive as "O&#39;Brien".
                subject = _html.unescape(_block(html_t, "subject", context))
                html = html_t.render(context)
                text = _tidy(text_t.render(context))
                return Rendered("email", subject, text, html=html)
            if channel == "sms":
                body = _tidy(self.env.get_template(f"sms/{name}.txt").render(context))
                size = sms_size(body)
                return Rendered("sms", None, body, segments=size.segments, encoding=size.encoding)
            if channel == "push":
                t = self.env.get_template(f"push/{name}.txt")
                link = _block(t, "link", context) if "link" in t.blocks else None
                return Rendered(
                    "push", _block(t, "title", context), _block(t, "body", context), link=link
                )
        except RenderError as exc:
            raise RenderError(f"template {channel}/{name}: {exc}") from None
        except TemplateNotFound as exc:
            raise RenderError(f"template {exc.name} does not exist") from None
        except SecurityError as exc:
            raise RenderError(f"template {channel}/{name}: not allowed: {exc}") from None
        except TemplateError as exc:
            raise RenderError(f"template {channel}/{name}: {exc.message or exc}") from None
        except Exception as exc:  # a filter on bad data, e.g. a division by zero
            raise RenderError(f"template {channel}/{name}: {type(exc).__name__}: {exc}") from None
        raise RenderError(f"unknown channel '{channel}'")


def _block(template: Any, block: str, context: Mapping[str, Any]) -> str:
    if block not in template.blocks:
        raise RenderError(f"template {template.name} has no {{% block {block} %}}")
    ctx = template.new_context(dict(context))
    return " ".join("".join(template.blocks[block](ctx)).split())


def _tidy(text: str) -> str:
    """Trim trailing spaces and collapse runs of blank lines left by template logic."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out)


class Conditions:
    """Jinja2 expressions used as conditions, compiled once and evaluated many times."""

    def __init__(self, env: JourneyEnvironment | None = None) -> None:
        self.env = env or make_environment()
        self._compiled: dict[str, Any] = {}
        self._globals = dict(self.env.globals)

    def check(self, source: str) -> str | None:
        """``None`` if ``source`` compiles, else the syntax error message."""
        if "{{" in source or "{%" in source:
            return "write a condition without {{ }} or {% %}, e.g. user.country == 'FR'"
        try:
            self.env.compile_expression(source)
        except TemplateSyntaxError as exc:
            return exc.message or "invalid expression"
        return None

    def evaluate(self, source: str, context: Mapping[str, Any]) -> bool:
        """Truth of ``source``; a condition that fails (missing data, type error) is false."""
        template = self._compiled.get(source)
        if template is None:
            self.env.compile_expression(source)  # rejects anything but one expression
            template = self.env.from_string("{% set result = (" + source + ") %}")
            self._compiled[source] = template
        try:
            # shared=True skips copying the globals into every context: conditions are
            # evaluated once per event and timer, so this is on the hot path.
            ctx = new_context(
                self.env, template.name, template.blocks, {**self._globals, **context}, shared=True
            )
            for _ in template.root_render_func(ctx):
                pass
            return bool(ctx.vars["result"])
        except Exception:  # noqa: BLE001 - a condition over missing data does not hold
            return False


@dataclass(frozen=True)
class VariableUse:
    """``user.first_name`` used on ``line`` of a template or condition."""

    root: str
    attribute: str | None
    line: int


def variable_uses(ast: nodes.Template | nodes.Node) -> list[VariableUse]:
    """Top-level names and their first attribute (``event.items``, ``event['items']``)."""
    uses: list[VariableUse] = []
    shadowed: set[str] = set()
    for node in ast.find_all((nodes.For, nodes.Assign, nodes.Macro, nodes.With)):
        for target in node.find_all(nodes.Name):
            if target.ctx in ("store", "param"):
                shadowed.add(target.name)
    attribute_of: set[int] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        base = node.node
        if isinstance(base, nodes.Name) and base.ctx == "load" and base.name not in shadowed:
            if isinstance(node, nodes.Getattr):
                attr: str | None = node.attr
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                attr = node.arg.value
            else:
                attr = None
            uses.append(VariableUse(base.name, attr, node.lineno))
            attribute_of.add(id(base))
    for name in ast.find_all(nodes.Name):
        if name.ctx == "load" and id(name) not in attribute_of and name.name not in shadowed:
            uses.append(VariableUse(name.name, None, name.lineno))
    return uses


def template_chain(env: JourneyEnvironment, name: str) -> list[tuple[str, str, nodes.Template]]:
    """``(name, filename, ast)`` for a template and every layout it extends or includes."""
    seen: list[tuple[str, str, nodes.Template]] = []
    todo = [name]
    while todo:
        current = todo.pop()
        if any(current == s[0] for s in seen):
            continue
        assert env.loader is not None
        source, filename, _ = env.loader.get_source(env, current)
        ast = env.parse(source, current, filename)
        seen.append((current, filename or current, ast))
        for ref in ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
            target = ref.template
            if isinstance(target, nodes.Const) and isinstance(target.value, str):
                todo.append(target.value)
    return seen

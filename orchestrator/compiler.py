"""Journey YAML -> validated :class:`Machine`. Core: reads the journey, its templates and the
catalog through the loader; no network, no clock.

Every mistake is collected and reported at once, each as ``path:line:col: error: ...``:

* YAML syntax, unknown keys and step kinds (with "did you mean"), missing keys, bad durations,
  clock times, percentages and time zones (via :mod:`spec` and :mod:`spec_errors`);
* duplicate step ids, ``next``/``on_event``/``on_timeout``/branch/variant targets that do not
  exist, unreachable steps, loops that never wait, split weights that do not add up to 100%;
* conditions that do not parse or use names the profile or the event cannot provide;
* templates that are missing for a channel the step may use, that do not parse, lack a
  required block, or use variables the profile or the trigger event cannot provide;
* events that the catalog does not know.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from jinja2 import TemplateNotFound, TemplateSyntaxError
from jinja2 import meta as jinja_meta
from pydantic import ValidationError

from . import spec
from .catalog import Catalog, load_catalog
from .errors import JourneyError, JourneyErrors, Location, did_you_mean, one_of
from .loader import LocatedDict, load_text, locate
from .machine import (
    WAITING_KINDS,
    BranchState,
    Cap,
    Delivery,
    ExitState,
    Machine,
    Match,
    SendState,
    SplitState,
    State,
    UpdateProfileState,
    WaitForState,
    WaitState,
    successors,
)
from .project import Project
from .render import (
    CONDITION_NAMES,
    MESSAGE_NAMES,
    REQUIRED_BLOCKS,
    TEMPLATE_FILES,
    Conditions,
    Renderer,
    template_chain,
    variable_uses,
)
from .spec_errors import translate

_JINJA_SPECIAL = frozenset({"loop", "self", "super", "caller", "varargs", "kwargs"})


@dataclass
class _Context:
    path: str
    data: Any
    catalog: Catalog
    renderer: Renderer
    errors: list[JourneyError] = field(default_factory=list)
    checked_templates: set[tuple[str, str]] = field(default_factory=set)
    template_digests: dict[str, str] = field(default_factory=dict)

    def error(self, message: str, loc: tuple[Any, ...] | Location) -> None:
        where = loc if isinstance(loc, Location) else locate(self.data, loc, self.path)
        if any(e.message == message and e.location == where for e in self.errors):
            return  # e.g. event.itmes used twice on one template line: say it once
        self.errors.append(JourneyError(message, where))


def compile_journey(path: str | Path, project: Project | None = None) -> Machine:
    """Compile one journey file; raises :class:`JourneyErrors` listing every mistake."""
    p = Path(path)
    project = project or Project.find(p.resolve().parent)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JourneyErrors([JourneyError(f"cannot read file: {exc}", Location(str(path)))])
    catalog = load_catalog(project.catalog_path)
    return compile_text(text, str(path), p.stem, catalog, Renderer(project.templates_dir))


def compile_text(
    text: str, path: str, name: str, catalog: Catalog, renderer: Renderer
) -> Machine:
    try:
        data = load_text(text, path)
    except JourneyError as exc:
        raise JourneyErrors([exc]) from None
    if not isinstance(data, LocatedDict):
        raise JourneyErrors(
            [
                JourneyError(
                    "a journey file must be a mapping with at least 'trigger' and 'steps'",
                    Location(path, 1, 1),
                )
            ]
        )
    ctx = _Context(path, data, catalog, renderer)
    try:
        journey = spec.JourneySpec.model_validate(data)
    except ValidationError as exc:
        ctx.errors.extend(translate(exc, data, path))
        raise JourneyErrors(ctx.errors) from None
    try:
        machine = _build(journey, name, ctx)
    except (TemplateNotFound, TemplateSyntaxError, RecursionError, ValueError) as exc:
        ctx.error(f"cannot compile: {exc}", Location(path))
        raise JourneyErrors(ctx.errors) from None
    if ctx.errors:
        raise JourneyErrors(ctx.errors)
    return machine


def _build(j: spec.JourneySpec, name: str, ctx: _Context) -> Machine:
    ids = [s.id for s in j.steps]
    first_index: dict[str, int] = {}
    for i, sid in enumerate(ids):
        if sid in first_index:
            ctx.error(
                f"duplicate step id '{sid}' (first used by step #{first_index[sid] + 1}); "
                "step ids must be unique",
                ("steps", i, "id"),
            )
        else:
            first_index[sid] = i

    def target(ref: str | None, default: str | None, loc: tuple[Any, ...]) -> str | None:
        if ref is None:
            return default
        if ref in ("end", "complete") and ref not in first_index:
            return None
        if ref not in first_index:
            ctx.error(
                f"'{ref}' is not a step in this journey{did_you_mean(ref, ids)}; expected one of "
                f"{one_of(ids)} or 'end'",
                loc,
            )
        return ref

    states: dict[str, State] = {}
    for i, step in enumerate(j.steps):
        following = ids[i + 1] if i + 1 < len(ids) else None
        base: tuple[Any, ...] = ("steps", i)
        nxt = target(step.next, following, (*base, "next"))
        states.setdefault(step.id, _state(step, nxt, following, base, target, ctx))
        if step.kind in ("branch", "split", "wait_for", "exit") and step.next is not None:
            ctx.error(
                f"step '{step.id}' is {'an' if step.kind == 'exit' else 'a'} {step.kind}: "
                "it chooses where to go itself, so it "
                f"takes no 'next'",
                (*base, "next"),
            )

    start = ids[0]
    _check_graph(states, start, ids, ctx)
    _check_conditions(j, ctx)
    _check_events(j, ctx)
    for i, step in enumerate(j.steps):
        if step.send is not None:
            _check_send(step, i, j, ctx)
        if step.update_profile is not None:
            attrs = ctx.catalog.profile_attributes()
            if ctx.catalog.profile:
                for key in step.update_profile:
                    if key not in attrs:
                        ctx.error(
                            f"update_profile sets '{key}', which catalog.yaml does not list "
                            f"under profile{did_you_mean(key, attrs)}",
                            ("steps", i, "update_profile", key),
                        )
    if j.delivery.quiet_hours and j.delivery.quiet_hours.start == j.delivery.quiet_hours.end:
        ctx.error(
            "quiet hours start and end at the same time; expected a window such as 21:00 to 08:00",
            ("delivery", "quiet_hours"),
        )

    delivery = Delivery(
        quiet_hours=(
            (j.delivery.quiet_hours.start, j.delivery.quiet_hours.end)
            if j.delivery.quiet_hours
            else None
        ),
        timezone=j.delivery.timezone,
        frequency_caps=tuple(Cap(c.max, c.per, c.channel) for c in j.delivery.frequency_caps),
        opt_in_required=tuple(j.delivery.opt_in_required),
    )
    machine = Machine(
        journey=name,
        description=j.description,
        trigger_event=j.trigger.event,
        trigger_when=j.trigger.when,
        audience=j.trigger.audience,
        re_entry=j.re_entry,
        holdout=j.holdout,
        goals=tuple(Match(g.event, g.when) for g in j.goals),
        exits=tuple(Match(g.event, g.when) for g in j.exit_on),
        conversion_window=j.conversion_window,
        delivery=delivery,
        start=start,
        states=states,
        templates=dict(sorted(ctx.template_digests.items())),
        profile_defaults=ctx.catalog.profile_defaults(),
    )
    return machine.with_version()


def _state(
    step: spec.StepSpec,
    nxt: str | None,
    following: str | None,
    base: tuple[Any, ...],
    target: Any,
    ctx: _Context,
) -> State:
    if step.send is not None:
        s = step.send
        if s.channel == "preferred":
            channels = tuple(s.fallback) or spec.CHANNELS
            prefer = True
        else:
            if s.fallback:
                ctx.error(
                    "'fallback' only goes with channel: preferred; for a fixed order write "
                    "channel: [push, email, sms]",
                    (*base, "send", "fallback"),
                )
            channels = (s.channel,) if isinstance(s.channel, str) else tuple(s.channel)
            prefer = False
        return SendState(channels, prefer, s.template, nxt)
    if step.wait is not None:
        return WaitState(step.wait.duration, step.wait.until, nxt)
    if step.wait_for is not None:
        w = step.wait_for
        return WaitForState(
            w.event,
            w.when,
            w.timeout,
            target(w.on_event, following, (*base, "wait_for", "on_event")),
            target(w.on_timeout, following, (*base, "wait_for", "on_timeout")),
        )
    if step.branch is not None:
        b = step.branch
        cases = tuple(
            (c.when, target(c.next, following, (*base, "branch", "cases", k, "next")))
            for k, c in enumerate(b.cases)
        )
        return BranchState(cases, target(b.else_, following, (*base, "branch", "else")))
    if step.split is not None:
        total = sum(v.weight for v in step.split)
        if abs(total - 100.0) > 1e-6:
            ctx.error(
                f"split weights add up to {total:g}%; they must add up to 100%",
                (*base, "split"),
            )
        names: set[str] = set()
        for k, v in enumerate(step.split):
            if v.name in names:
                ctx.error(
                    f"two variants of this split share the name '{v.name}'; give each its own",
                    (*base, "split", k, "name"),
                )
            names.add(v.name)
        return SplitState(
            tuple(
                (v.name, v.weight, target(v.next, following, (*base, "split", k, "next")))
                for k, v in enumerate(step.split)
            )
        )
    if step.update_profile is not None:
        return UpdateProfileState(dict(step.update_profile), nxt)
    assert step.exit is not None
    return ExitState(step.exit.reason, step.exit.converted)


def _step_loc(ids: list[str], sid: str) -> tuple[Any, ...]:
    return ("steps", ids.index(sid))


def _check_graph(states: dict[str, State], start: str, ids: list[str], ctx: _Context) -> None:
    reachable: set[str] = set()
    todo = [start]
    while todo:
        sid = todo.pop()
        if sid in reachable or sid not in states:
            continue
        reachable.add(sid)
        todo.extend(n for n in successors(states[sid]) if n is not None)
    for sid in dict.fromkeys(ids):
        if sid not in reachable and sid in states:
            ctx.error(
                f"step '{sid}' is unreachable: no step leads to it; point a 'next' at it or "
                "remove it",
                (*_step_loc(ids, sid), "id"),
            )
    if len(set(ids)) != len(ids):
        # With a duplicate id (reported already) "the next step" is ambiguous: a loop found
        # now would be an artefact of the duplicate, not a mistake of its own.
        return
    # A cycle through steps that never wait would spin forever: find one with a DFS over the
    # edges leaving non-waiting states.
    colour: dict[str, int] = {}
    reported: set[frozenset[str]] = set()

    def visit(sid: str, trail: list[str]) -> None:
        colour[sid] = 1
        trail.append(sid)
        for n in successors(states[sid]):
            if n is None or n not in states or states[n].kind in WAITING_KINDS:
                continue
            if colour.get(n) == 1:
                cycle = trail[trail.index(n) :]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    ctx.error(
                        "steps " + " -> ".join([*cycle, n]) + " loop without a wait; add a "
                        "wait or wait_for inside the loop so a user cannot spin forever",
                        (*_step_loc(ids, n), "id"),
                    )
            elif colour.get(n) is None:
                visit(n, trail)
        trail.pop()
        colour[sid] = 2

    for sid in ids:
        if sid in states and states[sid].kind not in WAITING_KINDS and colour.get(sid) is None:
            visit(sid, [])


def _event_props(ctx: _Context, event: str) -> set[str] | None:
    return ctx.catalog.event_properties(event)


def _check_names(
    uses: Iterable[Any],
    allowed_roots: frozenset[str],
    event: str,
    trigger: str,
    ctx: _Context,
    where: Any,
    what: str,
    line_offset: int = 0,
) -> None:
    """Check root names and ``user.x``/``event.x``/``trigger.x`` against the catalog."""
    profile = ctx.catalog.profile_attributes()
    for use in uses:
        loc = where(use.line) if callable(where) else where
        if use.root not in allowed_roots:
            ctx.error(
                f"{what} uses '{use.root}', which is not defined{did_you_mean(use.root, allowed_roots)}"
                f"; names available: {', '.join(sorted(allowed_roots))}",
                loc,
            )
            continue
        if use.attribute is None:
            continue
        if use.root == "user" and ctx.catalog.profile and use.attribute not in profile:
            ctx.error(
                f"{what} uses user.{use.attribute}, which the profile does not provide"
                f"{did_you_mean(use.attribute, profile)}; add it to catalog.yaml under profile "
                "or fix the name",
                loc,
            )
        if use.root in ("event", "trigger"):
            ev = event if use.root == "event" else trigger
            props = _event_props(ctx, ev)
            if props is not None and use.attribute not in props:
                ctx.error(
                    f"{what} uses {use.root}.{use.attribute}, which the event '{ev}' does not "
                    f"provide{did_you_mean(use.attribute, props)}; it has "
                    f"{', '.join(sorted(props)) or 'no properties'}",
                    loc,
                )


def _check_condition(
    source: str, loc: tuple[Any, ...], event: str, trigger: str, ctx: _Context
) -> None:
    conditions = Conditions(ctx.renderer.env)
    problem = conditions.check(source)
    if problem:
        ctx.error(f"condition {source!r} does not parse: {problem}", loc)
        return
    ast = ctx.renderer.env.parse("{{ " + source + " }}")
    _check_names(
        variable_uses(ast), CONDITION_NAMES, event, trigger, ctx, loc, f"condition {source!r}"
    )


def _check_conditions(j: spec.JourneySpec, ctx: _Context) -> None:
    trig = j.trigger.event
    if j.trigger.when:
        _check_condition(j.trigger.when, ("trigger", "when"), trig, trig, ctx)
    if j.trigger.audience:
        _check_condition(j.trigger.audience, ("trigger", "audience"), trig, trig, ctx)
    for key, matches in (("goals", j.goals), ("exit_on", j.exit_on)):
        for k, g in enumerate(matches):
            if g.when:
                _check_condition(g.when, (key, k, "when"), g.event, trig, ctx)
    for i, step in enumerate(j.steps):
        if step.wait_for and step.wait_for.when:
            w = step.wait_for
            _check_condition(w.when, ("steps", i, "wait_for", "when"), w.event, trig, ctx)  # type: ignore[arg-type]
        if step.branch:
            for k, case in enumerate(step.branch.cases):
                loc = ("steps", i, "branch", "cases", k, "when")
                _check_condition(case.when, loc, trig, trig, ctx)


def _check_events(j: spec.JourneySpec, ctx: _Context) -> None:
    known = set(ctx.catalog.events)
    if not known:
        return

    def check(event: str, loc: tuple[Any, ...]) -> None:
        if event not in known:
            ctx.error(
                f"event '{event}' is not in catalog.yaml{did_you_mean(event, known)}; known "
                f"events: {', '.join(sorted(known))}",
                loc,
            )

    check(j.trigger.event, ("trigger", "event"))
    for key, matches in (("goals", j.goals), ("exit_on", j.exit_on)):
        for k, g in enumerate(matches):
            check(g.event, (key, k, "event") if isinstance(ctx.data[key][k], dict) else (key, k))
    for i, step in enumerate(j.steps):
        if step.wait_for:
            check(step.wait_for.event, ("steps", i, "wait_for", "event"))


def _check_send(step: spec.StepSpec, i: int, j: spec.JourneySpec, ctx: _Context) -> None:
    """Every channel the step may use needs its template files, and they must check out."""
    assert step.send is not None
    s = step.send
    if s.channel == "preferred":
        channels = tuple(s.fallback) or spec.CHANNELS
    else:
        channels = (s.channel,) if isinstance(s.channel, str) else tuple(s.channel)
    for channel in channels:
        missing = ctx.renderer.missing_files(channel, s.template)
        if missing:
            ctx.error(
                f"template '{s.template}' has no {channel} version: "
                f"templates/{missing[0]} does not exist"
                + did_you_mean(s.template, _template_names(ctx, channel)),
                ("steps", i, "send", "template"),
            )
            continue
        for pattern in TEMPLATE_FILES[channel]:
            _check_template(pattern, s.template, step.id, j.trigger.event, ctx)


def _template_names(ctx: _Context, channel: str) -> list[str]:
    folder = ctx.renderer.templates_dir / channel
    if not folder.is_dir():
        return []
    return sorted({p.stem for p in folder.iterdir() if p.is_file()})


def _check_template(pattern: str, name: str, step_id: str, trigger: str, ctx: _Context) -> None:
    template_name = pattern.format(name=name)
    if (template_name, trigger) in ctx.checked_templates:
        return
    ctx.checked_templates.add((template_name, trigger))
    env = ctx.renderer.env
    try:
        chain = template_chain(env, template_name)
    except TemplateSyntaxError as exc:
        ctx.error(
            f"template syntax: {exc.message}",
            Location(_template_path(ctx, exc.name or template_name), exc.lineno or 0, 1),
        )
        return
    except TemplateNotFound as exc:
        referrer, line = _find_reference(env, template_name, str(exc.name))
        ctx.error(
            f"template {referrer} refers to {exc.name}, which does not exist",
            Location(_template_path(ctx, referrer), line, 1),
        )
        return
    for tname, filename, ast in chain:
        ctx.template_digests[tname] = hashlib.sha256(Path(filename).read_bytes()).hexdigest()[:16]
        declared = jinja_meta.find_undeclared_variables(ast) - set(env.globals) - _JINJA_SPECIAL
        uses = [u for u in variable_uses(ast) if u.root in declared or u.root in MESSAGE_NAMES]
        _check_names(
            uses,
            MESSAGE_NAMES,
            trigger,
            trigger,
            ctx,
            lambda line, f=tname: Location(_template_path(ctx, f), line, 1),
            f"template {tname} (used by step '{step_id}')",
        )
    blocks = REQUIRED_BLOCKS.get(pattern, ())
    if blocks:
        defined: set[str] = set()
        for _, _, ast in chain:
            # An empty block does not count: the layout's placeholder {% block subject %}
            # {% endblock %} would otherwise let a template without a subject through.
            defined |= {b.name for b in ast.find_all(_block_type()) if _has_content(b)}
        for block in blocks:
            if block not in defined:
                ctx.error(
                    f"template {template_name} must define {{% block {block} %}}",
                    Location(_template_path(ctx, template_name), 1, 1),
                )


def _find_reference(env: Any, start: str, missing: str) -> tuple[str, int]:
    """The template reachable from ``start`` that extends/includes ``missing``, and the line."""
    from jinja2 import nodes

    seen: set[str] = set()
    todo = [start]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            source, _, _ = env.loader.get_source(env, current)
            ast = env.parse(source)
        except (TemplateNotFound, TemplateSyntaxError):
            continue
        for ref in ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
            target = ref.template
            if isinstance(target, nodes.Const) and isinstance(target.value, str):
                if target.value == missing:
                    return current, ref.lineno
                todo.append(target.value)
    return start, 1


def _block_type() -> type:
    from jinja2 import nodes

    return nodes.Block


def _has_content(block: Any) -> bool:
    """Whether a block has anything in it beyond whitespace."""
    from jinja2 import nodes

    for node in block.body:
        if isinstance(node, nodes.Output) and all(
            isinstance(child, nodes.TemplateData) and not child.data.strip()
            for child in node.nodes
        ):
            continue
        return True
    return False


def _template_path(ctx: _Context, template_name: str) -> str:
    root = ctx.renderer.templates_dir
    full = root / template_name
    try:
        return str(full.relative_to(Path.cwd()))
    except ValueError:
        return str(full)


def compile_all(project: Project, files: Iterable[str | Path] | None = None) -> tuple[
    dict[str, Machine], list[JourneyError]
]:
    """Compile many journeys; returns the machines that compiled and every error found."""
    machines: dict[str, Machine] = {}
    errors: list[JourneyError] = []
    try:
        catalog = load_catalog(project.catalog_path)
    except JourneyErrors as exc:
        return {}, list(exc.errors)
    except JourneyError as exc:
        return {}, [exc]
    renderer = Renderer(project.templates_dir)
    for f in files if files is not None else project.journey_files():
        p = Path(f)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(JourneyError(f"cannot read file: {exc}", Location(_display_path(p))))
            continue
        try:
            machines[p.stem] = compile_text(text, _display_path(p), p.stem, catalog, renderer)
        except JourneyErrors as exc:
            errors.extend(exc.errors)
    return machines, errors


def _display_path(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)

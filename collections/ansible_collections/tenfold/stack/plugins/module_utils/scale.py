# Copyright: tenfold contributors
# SPDX-License-Identifier: MIT
"""Pure logic of a scale request: which pools, and how many replicas each should end with.

`scale.yml` takes `direction` + `step` (relative) or `replicas` (absolute, with `pool`). Requests past a
pool's bounds are clamped to them, and the clamp is said; malformed requests are errors.
"""

from __future__ import annotations

from dataclasses import dataclass

DIRECTIONS = ("up", "down")


class ScaleRequestError(ValueError):
    """A scale request that cannot be carried out; the message says what to fix."""


@dataclass(frozen=True)
class Bounds:
    min_replicas: int
    max_replicas: int


@dataclass(frozen=True)
class PoolTarget:
    pool: str
    current: int
    target: int
    clamped: bool
    message: str
    # The run reconciles the pool: it was asked about it (even at its size: its warm replicas are topped up)
    # and the request is not stale.
    reconcile: bool = True

    @property
    def direction(self) -> str:
        if self.target > self.current:
            return "up"
        if self.target < self.current:
            return "down"
        return "none"

    def as_dict(self) -> dict:
        return {
            "pool": self.pool,
            "current": self.current,
            "target": self.target,
            "direction": self.direction,
            "clamped": self.clamped,
            "message": self.message,
            "reconcile": self.reconcile,
        }


def _as_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise ScaleRequestError(f"{name} must be a whole number, got {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not text.lstrip("-").isdigit():
        raise ScaleRequestError(f"{name} must be a whole number, got {value!r}")
    return int(text)


def parse_request(
    pools: list[str],
    pool: str | None,
    direction: str | None,
    step: object,
    replicas: object,
) -> tuple[list[str], str | None, int, int | None]:
    """Validate the raw extra vars. Returns (pools, direction, step, replicas).

    `replicas` may also map pool names to absolute counts ({"frontend": 3, "backend": 4}): several pools
    in one run (restore.yml reconverges a stack this way); it is returned as a dict of whole numbers."""
    pool = (pool or "").strip() or None
    direction = (direction or "").strip() or None
    if isinstance(replicas, dict):
        return _parse_counts(pools, pool, direction, replicas)
    has_replicas = replicas not in (None, "")
    if pool is not None and pool not in pools:
        choices = ", ".join(pools)
        raise ScaleRequestError(f"pool={pool!r} is not a pool of this stack; choose one of {choices}")
    if has_replicas and direction is not None:
        raise ScaleRequestError("give either direction (with an optional step) or replicas, not both")
    if has_replicas:
        if pool is None:
            raise ScaleRequestError("replicas needs pool: an absolute count applies to one pool")
        count = _as_int("replicas", replicas)
        if count < 0:
            raise ScaleRequestError(f"replicas must be 0 or more, got {count}")
        return [pool], None, 0, count
    if direction is None:
        raise ScaleRequestError(
            "say what to do: -e direction=up|down [-e step=N], or -e pool=NAME -e replicas=N"
        )
    if direction not in DIRECTIONS:
        raise ScaleRequestError(f"direction must be 'up' or 'down', got {direction!r}")
    amount = _as_int("step", 1 if step in (None, "") else step)
    if amount < 1:
        raise ScaleRequestError(f"step must be 1 or more, got {amount}")
    return ([pool] if pool else list(pools)), direction, amount, None


def parse_expected(expect_current: object, chosen: list[str], replicas: object) -> int | None:
    """`expect_current`: the pool's size the request was planned on (the monitor's decisions carry it)."""
    if expect_current in (None, ""):
        return None
    if len(chosen) != 1 or isinstance(replicas, dict) or replicas in (None, ""):
        raise ScaleRequestError("expect_current goes with one pool and its replicas")
    count = _as_int("expect_current", expect_current)
    if count < 0:
        raise ScaleRequestError(f"expect_current must be 0 or more, got {count}")
    return count


def stale_target(pool: str, current: int, expected: int) -> PoolTarget:
    """A request planned on `expected` replicas when the pool has `current`: something changed the pool since
    (another scale run, a replica gone), and what it left stands; the requester plans again from it."""
    message = (
        f"{pool}: planned at {expected} replicas, the pool has {current} now: nothing done, the request is"
        " stale (planned again from what the pool has)"
    )
    return PoolTarget(
        pool=pool, current=current, target=current, clamped=False, message=message, reconcile=False
    )


def _parse_counts(
    pools: list[str], pool: str | None, direction: str | None, replicas: dict
) -> tuple[list[str], None, int, dict[str, int]]:
    if pool is not None or direction is not None:
        raise ScaleRequestError("replicas given per pool takes neither pool nor direction")
    if not replicas:
        raise ScaleRequestError("replicas per pool is empty: name at least one pool and its count")
    unknown = sorted(str(name) for name in replicas if name not in pools)
    if unknown:
        raise ScaleRequestError(
            f"{', '.join(unknown)}: not a pool of this stack; choose from {', '.join(pools)}"
        )
    counts = {}
    for name in pools:
        if name in replicas:
            counts[name] = _as_int(f"replicas.{name}", replicas[name])
            if counts[name] < 0:
                raise ScaleRequestError(f"replicas.{name} must be 0 or more, got {counts[name]}")
    return list(counts), None, 0, counts


def target_for(
    pool: str,
    current: int,
    bounds: Bounds,
    direction: str | None,
    step: int,
    replicas: int | None,
) -> PoolTarget:
    """The count a pool should end with, clamped to its bounds (and saying so)."""
    if bounds.min_replicas < 0 or bounds.min_replicas > bounds.max_replicas:
        raise ScaleRequestError(
            f"{pool}: bounds min={bounds.min_replicas} max={bounds.max_replicas} are not a valid range"
        )
    if replicas is not None:
        wanted = replicas
    elif direction == "up":
        wanted = current + step
    else:
        wanted = current - step
    target = min(max(wanted, bounds.min_replicas), bounds.max_replicas)
    clamped = target != wanted
    if clamped:
        edge = "maximum" if wanted > bounds.max_replicas else "minimum"
        message = f"{pool}: {wanted} replicas asked, clamped to the {edge} of {target}"
    elif target == current:
        message = f"{pool}: already at {current} replicas"
    else:
        message = f"{pool}: {current} -> {target} replicas"
    return PoolTarget(pool=pool, current=current, target=target, clamped=clamped, message=message)


def pool_bounds(item: dict) -> tuple[str, Bounds]:
    try:
        name = str(item["name"])
        return name, Bounds(int(item["min_replicas"]), int(item["max_replicas"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ScaleRequestError(f"pool entry {item!r} needs name, min_replicas and max_replicas") from exc


def plan_request(
    items: list[dict],
    current: dict[str, int],
    pool: str | None,
    direction: str | None,
    step: object,
    replicas: object,
    expect_current: object,
) -> list[PoolTarget]:
    """The scale request's target for every pool (`items`, the role's pool list), from each pool's
    `current` size across its Docker hosts; a pool missing from `current` has no replica running."""
    pools = [pool_bounds(item) for item in items]
    chosen, direction, step, wanted = parse_request(
        [n for n, _pool in pools], pool, direction, step, replicas
    )
    expected = parse_expected(expect_current, chosen, wanted)
    plan = []
    for name, bounds in pools:
        now = int(current.get(name, 0))
        if name not in chosen:
            plan.append(PoolTarget(name, now, now, False, f"{name}: not part of this request", False))
        elif expected is not None and expected != now:
            plan.append(stale_target(name, now, expected))
        else:
            count = wanted[name] if isinstance(wanted, dict) else wanted
            plan.append(target_for(name, now, bounds, direction, step, count))
    return plan


def scale_plan(args: dict) -> dict:
    """tenfold.stack.scale_plan's result for its arguments (the module's and its action plugin's one body)."""
    request = [args.get(key) for key in ("pool", "direction", "step", "replicas", "expect_current")]
    items = args.get("pools") or []
    if args.get("validate_only"):
        names = [str(item.get("name")) for item in items]
        chosen, _direction, _step, replicas = parse_request(names, *request[:4])
        parse_expected(request[4], chosen, replicas)
        return {"changed": False, "pools": [], "targets": {}}
    try:
        current = {str(k): int(v) for k, v in (args.get("current") or {}).items()}
    except (AttributeError, TypeError, ValueError) as exc:
        raise ScaleRequestError(f"current must map pool names to whole numbers: {exc}") from exc
    targets = plan_request(items, current, *request)
    return {
        "changed": False,
        "pools": [t.as_dict() for t in targets],
        "targets": {t.pool: t.target for t in targets},
        "warnings": [t.message for t in targets if t.clamped],
    }

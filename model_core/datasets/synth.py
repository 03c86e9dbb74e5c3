"""A synthetic behaviour log with structure a sequence model can learn.

Ingredients (all drawn from one seeded ``numpy`` generator, so a seed gives the same log):

- **Popularity**: item popularity follows a Zipf law (exponent ``zipf_a``) over a shuffled
  catalogue; each item has a category and a price (log-normal around its category's level).
- **Transitions**: every item has ``n_successors`` likely next items (mostly in its own
  category) with decreasing probabilities. Inside a session a user follows that table with
  probability ``p_follow``, else jumps: to a popular item of one of their favourite categories
  (half the time) or to a globally popular item.
- **Funnel**: the next action depends on the previous one (view → click → cart → purchase,
  with favourites); a cart, favourite or purchase is usually on the item just viewed or clicked.
- **Sessions and time**: a few users are active at once, their sessions interleave; events
  come at exponential gaps (global clock, strictly increasing timestamps), sessions have
  geometric lengths and a user's next session starts later.
- **Drift**: from ``change_at`` (a fraction of ``n_events`` or an event index) on, the
  transition table is replaced by a fresh one (popularity and the funnel stay).
- **New items** (``new_items``, default 0): that many more items, chosen among the most
  popular quarter of the catalogue, are born during the log, each at an event drawn
  uniformly from ``born_from`` (a fraction of ``n_events``) to the end. Before its birth an
  item is never drawn (a draw that lands on it is drawn again; a transition to it jumps
  instead); after it, it is an item like any other, so a model trained before cannot know it.
  With ``new_items=0`` the log is the one the options before gave (same draws).

Event ids are ``"synth<seed>:<i>"`` — unique and in time order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from schemas import ACTIONS, Event

#: 2024-01-01T00:00:00Z
DEFAULT_START_MS = 1_704_067_200_000

# funnel: row = previous action, columns = view, click, cart, fav, purchase
_FUNNEL = np.array([
    [0.55, 0.37, 0.05, 0.03, 0.00],  # after view
    [0.40, 0.40, 0.14, 0.04, 0.02],  # after click
    [0.30, 0.25, 0.10, 0.05, 0.30],  # after cart
    [0.45, 0.30, 0.20, 0.03, 0.02],  # after fav
    [0.70, 0.28, 0.02, 0.00, 0.00],  # after purchase
])
#: probability that a cart / fav / purchase is on the previous item
_P_SAME_ITEM = {2: 0.8, 3: 0.8, 4: 0.9}


def _transition_table(rng: np.random.Generator, n_items: int, cat: np.ndarray,
                      by_cat: list[np.ndarray], n_succ: int) -> np.ndarray:
    succ = np.empty((n_items, n_succ), dtype=np.int64)
    for i in range(n_items):
        pool = by_cat[cat[i]]
        pool = pool[pool != i]
        for j in range(n_succ):
            if len(pool) > 0 and rng.random() < 0.8:
                succ[i, j] = pool[rng.integers(len(pool))]
            else:
                succ[i, j] = rng.integers(n_items)
    return succ


def generate(n_events: int, n_users: int | None = None, n_items: int | None = None,
             seed: int = 0, start_ms: int = DEFAULT_START_MS,
             change_at: float | int | None = None, *, zipf_a: float = 0.9,
             n_successors: int = 3, p_follow: float = 0.65, mean_session_len: float = 8.0,
             concurrent_users: int = 16, mean_gap_ms: float = 3_000.0,
             new_items: int = 0, born_from: float = 0.5) -> list[Event]:
    """``n_events`` events in time order (see the module docstring for the structure).

    Defaults: ``n_users = max(5, n_events // 20)``, ``n_items = max(20, n_events // 20)``.
    ``change_at``: a float in (0, 1) is a fraction of ``n_events``; an int is an event index.
    ``new_items``: items born during the log (beyond ``n_items``), from ``born_from`` (a
    fraction of ``n_events``, in [0, 1)) on.
    """
    if n_events < 0:
        raise ValueError("n_events must be >= 0")
    n_users = n_users or max(5, n_events // 20)
    n_items = n_items or max(20, n_events // 20)
    if isinstance(change_at, float):
        if not 0.0 < change_at < 1.0:
            raise ValueError(f"change_at as a fraction must lie in (0, 1), got {change_at}")
        change_idx = int(change_at * n_events)
    else:
        change_idx = change_at
    if new_items < 0 or not 0.0 <= born_from < 1.0:
        raise ValueError(f"new_items must be >= 0 and born_from in [0, 1), got {new_items}, "
                         f"{born_from}")
    n_items += new_items
    rng = np.random.default_rng(seed)

    # catalogue: popularity, categories, prices
    n_cats = max(3, n_items // 25)
    perm = rng.permutation(n_items)  # popularity rank -> item
    pop = np.empty(n_items)
    pop[perm] = 1.0 / np.arange(1, n_items + 1) ** zipf_a
    pop /= pop.sum()
    cat = rng.integers(0, n_cats, n_items)
    by_cat = [np.flatnonzero(cat == c) for c in range(n_cats)]
    # cumulative weights: one draw = searchsorted(cdf, uniform) (rng.choice(p=...) is O(n))
    pop_cdf = np.cumsum(pop)
    cat_cdf = [np.cumsum(pop[ix]) for ix in by_cat]
    funnel_cdf = np.cumsum(_FUNNEL, axis=1)
    cat_price = np.exp(rng.normal(3.0, 1.0, n_cats))
    price = np.round(cat_price[cat] * np.exp(rng.normal(0.0, 0.3, n_items)), 2)

    succ_p = 1.0 / np.arange(1, n_successors + 1) ** 1.2
    succ_p /= succ_p.sum()
    succ_cdf = np.cumsum(succ_p)
    tables = [_transition_table(rng, n_items, cat, by_cat, n_successors)]
    if change_idx is not None:
        tables.append(_transition_table(np.random.default_rng([seed, 1]), n_items, cat, by_cat,
                                        n_successors))

    # births: every item is born at event 0, but new_items popular ones later (own generator)
    birth = np.zeros(n_items, dtype=np.int64)
    if new_items:
        rng_new = np.random.default_rng([seed, 2])
        pool = perm[: max(new_items, n_items // 4)]
        born_late = rng_new.choice(pool, new_items, replace=False)
        birth[born_late] = rng_new.integers(int(born_from * n_events), max(1, n_events),
                                            new_items)
    now = [0]  # the index of the event being drawn

    def born(item: int) -> bool:
        return not new_items or birth[item] <= now[0]

    # users: favourite categories, session state
    fav_cats = [rng.choice(n_cats, size=min(3, n_cats), replace=False) for _ in range(n_users)]
    last_item = np.full(n_users, -1, dtype=np.int64)
    last_action = np.zeros(n_users, dtype=np.int64)
    session_no = np.zeros(n_users, dtype=np.int64)
    left = np.zeros(n_users, dtype=np.int64)  # events left in the current session

    def draw(cdf: np.ndarray) -> int:
        return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(cdf) - 1)

    def jump(u: int) -> int:
        if rng.random() < 0.5:
            c = fav_cats[u][rng.integers(len(fav_cats[u]))]
            if len(by_cat[c]):
                item = int(by_cat[c][draw(cat_cdf[c])])
                if born(item):
                    return item
        item = draw(pop_cdf)
        while not born(item):  # most of the catalogue is born: this ends quickly
            item = draw(pop_cdf)
        return item

    def start_session(u: int) -> None:
        session_no[u] += 1
        left[u] = 1 + rng.geometric(1.0 / mean_session_len)
        last_action[u] = 0
        last_item[u] = -1

    active: list[int] = []
    idle = list(rng.permutation(n_users))
    t = float(start_ms)
    events: list[Event] = []
    for n in range(n_events):
        while len(active) < min(concurrent_users, n_users) and idle:
            u = int(idle.pop(int(rng.integers(len(idle)))))  # a random idle user returns
            start_session(u)
            active.append(u)
        now[0] = n
        u = active[rng.integers(len(active))]
        table = tables[1] if change_idx is not None and n >= change_idx else tables[0]
        a = draw(funnel_cdf[last_action[u]])
        prev = int(last_item[u])
        if prev < 0:
            item = jump(u)
        elif a in _P_SAME_ITEM and rng.random() < _P_SAME_ITEM[a]:
            item = prev
        elif rng.random() < p_follow:
            item = int(table[prev, draw(succ_cdf)])
            if not born(item):
                item = jump(u)
        else:
            item = jump(u)
        t += 1.0 + rng.exponential(mean_gap_ms)
        events.append(Event(
            event_id=f"synth{seed}:{n}",
            user_id=f"u{u}",
            item_id=f"i{item}",
            action=ACTIONS[a],
            timestamp_ms=int(t),
            session_id=f"u{u}-s{session_no[u]}",
            category_id=f"c{cat[item]}",
            price=float(price[item]),
        ))
        last_item[u] = item
        last_action[u] = a
        left[u] -= 1
        if left[u] <= 0:
            active.remove(u)
            idle.append(u)
    return events


def write_jsonl(events: list[Event], path: str | Path) -> None:
    """One event JSON per line (readable back with ``read_log(path, "jsonl")``)."""
    with Path(path).open("wb") as f:
        for e in events:
            f.write(e.to_json())
            f.write(b"\n")


__all__ = ["DEFAULT_START_MS", "generate", "write_jsonl"]

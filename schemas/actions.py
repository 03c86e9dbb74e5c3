"""The canonical action vocabulary and the aliases accepted on input."""

from schemas.exceptions import SchemaError

#: Canonical actions, in funnel order. The index of an action is its class id everywhere
#: (models' next-action head, state encoding, metrics).
ACTIONS: tuple[str, ...] = ("view", "click", "cart", "fav", "purchase")
N_ACTIONS = len(ACTIONS)

_ALIASES: dict[str, str] = {
    "pv": "view",
    "browse": "view",
    "view": "view",
    "click": "click",
    "clicks": "click",
    "cart": "cart",
    "carts": "cart",
    "addtocart": "cart",
    "add_to_cart": "cart",
    "fav": "fav",
    "favorite": "fav",
    "favourite": "fav",
    "purchase": "purchase",
    "buy": "purchase",
    "order": "purchase",
    "orders": "purchase",
    "transaction": "purchase",
}
_INDEX = {a: i for i, a in enumerate(ACTIONS)}


def normalize_action(raw: str) -> str:
    """Map an action name or alias (case-insensitive) to its canonical name."""
    if not isinstance(raw, str):
        raise SchemaError(f"action must be a string, got {type(raw).__name__}", "action")
    canon = _ALIASES.get(raw.strip().lower())
    if canon is None:
        raise SchemaError(
            f"unknown action {raw[:40]!r}; expected one of {', '.join(ACTIONS)} "
            "or an alias (pv, browse, buy, order, transaction, addtocart, carts)",
            "action",
        )
    return canon


def action_index(action: str) -> int:
    """Class id of a canonical action."""
    return _INDEX[action]

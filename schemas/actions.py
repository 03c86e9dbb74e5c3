"""The canonical action vocabulary and the aliases accepted on input."""

from schemas.exceptions import SchemaError

#: Canonical actions, in funnel order. The index of an action is its class id everywhere
#: (models' next-action head, state encoding, metrics).
ACTIONS: tuple[str, ...] = ("view", "click", "cart", "fav", "purchase")
N_ACTIONS = len(ACTIONS)

#: Accepted names, after :func:`alias_key` (lower case, spaces and hyphens as ``_``): the
#: canonical five, the names of public logs (Taobao ``pv``/``buy``, RetailRocket
#: ``addtocart``/``transaction``, REES46 ``cart``/``purchase``) and of the common analytics
#: event schemes (GA4 ``view_item``/``select_item``/``add_to_cart``/``add_to_wishlist``,
#: Segment's ``Product Viewed``/``Product Added``/``Order Completed``). Names that mean
#: something else (``remove_from_cart``, ``begin_checkout``, ``impression``) stay unknown:
#: the reader drops them with a count, the stream dead-letters them.
_ALIASES: dict[str, str] = {
    **dict.fromkeys(("view", "pv", "browse", "page_view", "pageview", "view_item",
                     "product_view", "product_viewed", "detail_view"), "view"),
    **dict.fromkeys(("click", "clicks", "select_item", "product_clicked"),
                    "click"),
    **dict.fromkeys(("cart", "carts", "addtocart", "add_to_cart", "add_to_basket",
                     "addtobasket", "product_added", "added_to_cart"), "cart"),
    **dict.fromkeys(("fav", "favorite", "favourite", "favorites", "add_to_wishlist",
                     "wishlist"), "fav"),
    **dict.fromkeys(("purchase", "buy", "order", "orders", "transaction",
                     "order_completed"), "purchase"),
}
_INDEX = {a: i for i, a in enumerate(ACTIONS)}


def alias_key(raw: str) -> str:
    """The form an action name is looked up in: lower case, spaces and hyphens as ``_``."""
    return "_".join(raw.strip().lower().replace("-", " ").split())


def normalize_action(raw: str) -> str:
    """Map an action name or alias (case-insensitive) to its canonical name."""
    if not isinstance(raw, str):
        raise SchemaError(f"action must be a string, got {type(raw).__name__}", "action")
    canon = _ALIASES.get(alias_key(raw))
    if canon is None:
        raise SchemaError(
            f"unknown action {raw[:40]!r}; expected one of {', '.join(ACTIONS)} "
            "or an alias (pv, page_view, add_to_cart, buy, transaction, ...; "
            "`seqstream schema` lists them)",
            "action",
        )
    return canon


def action_index(action: str) -> int:
    """Class id of a canonical action."""
    return _INDEX[action]

"""Data classes for a small shop inventory, with JSON round-tripping.

Prices are stored in integer cents to avoid floating-point surprises.

>>> stock = Inventory()
>>> stock.add(Item("TEA-01", "Green tea, 100 g", price_cents=450, quantity=12))
>>> stock.add(Item("MUG-02", "Enamel mug", price_cents=1290, quantity=3))
>>> stock.total_value_cents()
9270
>>> [item.sku for item in stock.low_stock(threshold=5)]
['MUG-02']
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(order=True)
class Item:
    """One product line. Items sort by SKU."""

    sku: str
    name: str = field(compare=False)
    price_cents: int = field(compare=False)
    quantity: int = field(default=0, compare=False)
    tags: list[str] = field(default_factory=list, compare=False)

    def __post_init__(self) -> None:
        if not self.sku or not self.sku.strip():
            raise ValueError("sku must not be empty")
        if self.price_cents < 0:
            raise ValueError("price cannot be negative")
        if self.quantity < 0:
            raise ValueError("quantity cannot be negative")

    @property
    def price(self) -> str:
        """Price formatted with two decimals.

        >>> Item("X", "x", 1205).price
        '12.05'
        """
        euros, cents = divmod(self.price_cents, 100)
        return f"{euros}.{cents:02d}"


@dataclass
class Inventory:
    """Collection of items keyed by SKU."""

    items: dict[str, Item] = field(default_factory=dict)

    def add(self, item: Item) -> None:
        """Add a new item; adding an existing SKU raises ``KeyError``."""
        if item.sku in self.items:
            raise KeyError(f"duplicate sku {item.sku!r}")
        self.items[item.sku] = item

    def adjust(self, sku: str, delta: int) -> int:
        """Change the quantity of ``sku`` by ``delta`` and return the new value.

        >>> inv = Inventory()
        >>> inv.add(Item("PEN", "Pen", 150, quantity=2))
        >>> inv.adjust("PEN", -2)
        0
        >>> inv.adjust("PEN", -1)
        Traceback (most recent call last):
        ...
        ValueError: only 0 of 'PEN' in stock
        """
        item = self.items[sku]
        if item.quantity + delta < 0:
            raise ValueError(f"only {item.quantity} of {sku!r} in stock")
        item.quantity += delta
        return item.quantity

    def total_value_cents(self) -> int:
        return sum(item.price_cents * item.quantity for item in self.items.values())

    def low_stock(self, threshold: int) -> list[Item]:
        """Items with quantity strictly below ``threshold``, sorted by SKU."""
        return sorted(item for item in self.items.values() if item.quantity < threshold)

    def with_tag(self, tag: str) -> list[Item]:
        return sorted(item for item in self.items.values() if tag in item.tags)

    def to_json(self) -> str:
        """Serialise to a JSON array sorted by SKU.

        >>> inv = Inventory()
        >>> inv.add(Item("B", "Bolt", 5, 100, ["metal"]))
        >>> print(inv.to_json())
        [{"sku": "B", "name": "Bolt", "price_cents": 5, "quantity": 100, "tags": ["metal"]}]
        """
        return json.dumps([asdict(item) for item in sorted(self.items.values())],
                          ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Inventory":
        """Rebuild an inventory written by :meth:`to_json`.

        >>> again = Inventory.from_json('[{"sku": "A", "name": "Axe", "price_cents": 2500}]')
        >>> again.items["A"].quantity, again.items["A"].price
        (0, '25.00')
        """
        inventory = cls()
        for record in json.loads(text):
            inventory.add(Item(**record))
        return inventory

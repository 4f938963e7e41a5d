"""Unit tests for the sample modules; run with ``python3 -m unittest test_tools``."""

import unittest
from datetime import date

from intervals import free_slots, merge
from inventory import Inventory, Item
from priority_queue import PriorityQueue
from roman import from_roman, to_roman
from turnstile import Turnstile
from workdays import add_workdays, workdays_between


class RomanTests(unittest.TestCase):
    def test_known_values(self):
        cases = {1: "I", 40: "XL", 444: "CDXLIV", 1987: "MCMLXXXVII"}
        for number, numeral in cases.items():
            with self.subTest(number=number):
                self.assertEqual(to_roman(number), numeral)
                self.assertEqual(from_roman(numeral), number)

    def test_rejects_bad_input(self):
        for bad in ["", "VX", "IC", "MMMM", "ABC"]:
            with self.subTest(bad=bad):
                with self.assertRaises(ValueError):
                    from_roman(bad)
        with self.assertRaises(TypeError):
            to_roman(True)


class IntervalTests(unittest.TestCase):
    def test_merge_nested(self):
        self.assertEqual(merge([(1, 10), (2, 3), (4, 5)]), [(1, 10)])

    def test_invalid_interval(self):
        with self.assertRaises(ValueError):
            merge([(5, 1)])

    def test_free_slots_whole_day(self):
        self.assertEqual(free_slots([], day=(9, 17)), [(9, 17)])


class PriorityQueueTests(unittest.TestCase):
    def test_fifo_for_equal_priorities(self):
        pq = PriorityQueue()
        for name in ["first", "second", "third"]:
            pq.push(name, 5)
        self.assertEqual(list(pq.drain()), ["first", "second", "third"])

    def test_remove_then_len(self):
        pq = PriorityQueue()
        pq.push("a", 1)
        pq.push("b", 2)
        pq.remove("a")
        self.assertEqual(len(pq), 1)
        self.assertNotIn("a", pq)
        self.assertEqual(pq.peek(), ("b", 2))


class TurnstileTests(unittest.TestCase):
    def test_counts_paid_entries(self):
        gate = Turnstile()
        gate.feed(["coin", "coin", "push", "coin", "push"])
        self.assertEqual(gate.coins, 2)
        self.assertEqual(gate.state, "locked")
        self.assertEqual(len(gate.history), 5)


class InventoryTests(unittest.TestCase):
    def test_round_trip(self):
        inv = Inventory()
        inv.add(Item("S-1", "Sauna whisk", 990, 4, ["seasonal"]))
        inv.add(Item("K-7", "Kettle", 3450, 1))
        again = Inventory.from_json(inv.to_json())
        self.assertEqual(again.items, inv.items)
        self.assertEqual([i.sku for i in again.with_tag("seasonal")], ["S-1"])

    def test_duplicate_sku(self):
        inv = Inventory()
        inv.add(Item("A", "a", 1))
        with self.assertRaises(KeyError):
            inv.add(Item("A", "again", 2))


class WorkdayTests(unittest.TestCase):
    def test_skip_weekend(self):
        self.assertEqual(add_workdays(date(2026, 1, 2), 1), date(2026, 1, 5))

    def test_count_with_holiday(self):
        days = workdays_between(date(2026, 6, 1), date(2026, 6, 8), [date(2026, 6, 3)])
        self.assertEqual(days, 4)


if __name__ == "__main__":
    unittest.main()

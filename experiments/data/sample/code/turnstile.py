"""A small table-driven finite state machine: a coin-operated turnstile.

The transition table maps ``(state, event)`` to ``(next_state, action)``.
Unknown events leave the machine where it is and record a warning instead
of raising, which keeps the controller alive when a sensor misbehaves.

>>> gate = Turnstile()
>>> gate.state
'locked'
>>> gate.feed(["push", "coin", "push", "push"])
['alarm', 'unlock', 'lock', 'alarm']
>>> gate.state
'locked'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class State(str, Enum):
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    MAINTENANCE = "maintenance"

    def __str__(self) -> str:
        return self.value


TRANSITIONS: dict[tuple[State, str], tuple[State, str]] = {
    (State.LOCKED, "coin"): (State.UNLOCKED, "unlock"),
    (State.LOCKED, "push"): (State.LOCKED, "alarm"),
    (State.UNLOCKED, "coin"): (State.UNLOCKED, "refund"),
    (State.UNLOCKED, "push"): (State.LOCKED, "lock"),
    (State.LOCKED, "service"): (State.MAINTENANCE, "lock"),
    (State.UNLOCKED, "service"): (State.MAINTENANCE, "lock"),
    (State.MAINTENANCE, "reset"): (State.LOCKED, "none"),
}


@dataclass
class Turnstile:
    """State machine with a history of ``(state, event, action)`` tuples."""

    _state: State = State.LOCKED
    history: list[tuple[str, str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    coins: int = 0

    @property
    def state(self) -> str:
        return str(self._state)

    def handle(self, event: str) -> str:
        """Apply one event and return the action taken.

        >>> t = Turnstile()
        >>> t.handle("kick")
        'ignored'
        >>> t.warnings
        ["no transition from 'locked' on 'kick'"]
        >>> t.handle("service"), t.handle("coin"), t.handle("reset")
        ('lock', 'ignored', 'none')
        """
        key = (self._state, event)
        if key not in TRANSITIONS:
            self.warnings.append(f"no transition from {self.state!r} on {event!r}")
            return "ignored"
        next_state, action = TRANSITIONS[key]
        if event == "coin" and action == "unlock":
            self.coins += 1
        self.history.append((self.state, event, action))
        self._state = next_state
        return action

    def feed(self, events: list[str]) -> list[str]:
        """Apply several events in order and return their actions."""
        return [self.handle(event) for event in events]

    def accepts(self, event: str) -> bool:
        """Return True when ``event`` has a transition from the current state.

        >>> Turnstile().accepts("coin"), Turnstile().accepts("reset")
        (True, False)
        """
        return (self._state, event) in TRANSITIONS


def reachable(start: State = State.LOCKED) -> set[str]:
    """Return every state reachable from ``start``.

    >>> sorted(reachable())
    ['locked', 'maintenance', 'unlocked']
    >>> sorted(reachable(State.MAINTENANCE))
    ['locked', 'maintenance', 'unlocked']
    """
    seen = {start}
    frontier = [start]
    while frontier:
        current = frontier.pop()
        for (state, _event), (target, _action) in TRANSITIONS.items():
            if state is current and target not in seen:
                seen.add(target)
                frontier.append(target)
    return {str(state) for state in seen}

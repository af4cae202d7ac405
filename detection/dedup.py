"""At-least-once input, counted once: remember recent event ids in bounded memory.

`RecentIds.first_time(event_id, at)` is True the first time an id is seen. Ids are kept
for `horizon` seconds of event time behind the newest event and at most `capacity` of them.
Whenever an id is forgotten (too old, or evicted for room), the `floor` rises to its event
time, and any event at or below the floor is refused as too late to check. So an accepted
event is never a repeat: a repeat carries its original's timestamp, and an original above
the floor is still remembered. What is refused is counted (`refused_late`), never guessed.
"""

from __future__ import annotations

from collections import deque


class RecentIds:
    __slots__ = ("horizon", "capacity", "seen", "order", "floor", "newest", "repeats", "refused_late")

    def __init__(self, horizon: float, capacity: int) -> None:
        self.horizon = horizon
        self.capacity = capacity
        self.seen: dict[str, float] = {}
        self.order: deque[str] = deque()
        self.floor = float("-inf")
        self.newest = float("-inf")
        self.repeats = 0
        self.refused_late = 0

    def first_time(self, event_id: str, at: float) -> bool:
        if event_id in self.seen:
            self.repeats += 1
            return False
        if at <= self.floor:
            self.refused_late += 1
            return False
        seen, order = self.seen, self.order
        seen[event_id] = at
        order.append(event_id)
        if at > self.newest:
            self.newest = at
        if len(order) > self.capacity or seen[order[0]] < self.newest - self.horizon:
            self._forget(self.newest - self.horizon)
        return True

    def _forget(self, older_than: float) -> None:
        seen, order = self.seen, self.order
        while order and (len(order) > self.capacity or seen[order[0]] < older_than):
            forgotten = seen.pop(order.popleft())
            if forgotten > self.floor:
                self.floor = forgotten

    def __len__(self) -> int:
        return len(self.seen)

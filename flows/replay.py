"""Which rows a replay may repeat, so the sink asks storage about those only (docs/architecture.md, invariant 5).

After a crash the flow resumes from the offsets of its last committed snapshot and replays
what came after. The only rows storage can already hold are the ones written after that
snapshot. So every id is recorded in a per-generation file *before* its INSERT (a generation
is the time between two snapshots; the snapshot state is its number). On resume with the
committed generation `c`, the ids of generations after `c` are the *suspects*: a replayed row
is looked up in storage only when its id is one of them. Every other row goes straight in.

Suspects are carried until the replay reaches them (the replay may take longer than one
epoch, and a second crash may come first): `resume` folds them into `suspects.ids`, and an id
leaves that set only once it has been seen again and recorded in the current generation.

Without a committed snapshot (first start, a crash before the first snapshot, or recovery
off) the position is unknown. If the generation files hold every id written since storage was
empty (the `complete` marker: set on a start with empty storage, dropped as soon as a file is
deleted), they are all suspects. Otherwise, if storage holds rows, every batch is looked up,
and stays so for that recovery state.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

KEEP_GENERATIONS = 16
"""Generation files kept behind the current one. Bytewax commits an epoch right after its
snapshots are written, so the committed generation trails by one or two; 16 (80 s at the
default 5-s epoch) is a wide margin."""


class ReplayGuard:
    """Records written ids per generation under `directory` (None: in memory only, for
    tests that never crash) and answers which ids a replay may repeat."""

    def __init__(self, directory: Path | None, tables: Iterable[str]) -> None:
        self._dir = directory
        self._tables = tuple(tables)
        self.generation = 0
        self.check_all = False
        self._suspects: dict[str, set[str]] = {table: set() for table in self._tables}

    def resume(self, state: dict[str, Any] | None, holds_rows: Callable[[str], bool]) -> None:
        """Start from the snapshot state Bytewax kept (None: no committed snapshot)."""
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)
        complete = self._dir / "complete" if self._dir is not None else None
        if state is not None:
            committed, self.check_all = state["generation"], state["check_all"]
            if complete is not None:
                complete.unlink(missing_ok=True)  # committed files go below: no longer every id
        else:
            committed = -1
            if complete is not None and complete.exists():
                self.check_all = False  # every id ever written is in the files: all suspects
            else:
                self.check_all = any(holds_rows(table) for table in self._tables)
                if complete is not None and not self.check_all:
                    complete.touch()  # storage is empty: from now on the files hold every id
        self.generation = committed + 1
        if self._dir is None:
            return
        carried = self._dir / "suspects.ids"
        sources = [carried] if carried.exists() else []
        sources += [path for number, path in self._generation_files() if number > committed]
        for path in sources:
            self._load(path)
        _write_atomically(carried, self._lines())
        for _, path in self._generation_files():
            path.unlink()

    def suspects(self, table: str) -> set[str]:
        return self._suspects[table]

    def record(self, table: str, ids: list[str]) -> None:
        """Before an INSERT: these ids may be in storage from now on. Also call it for
        suspects found in storage, so they stay suspects until a snapshot covers them."""
        if ids and self._dir is not None:
            with (self._dir / f"{self.generation}.ids").open("a") as handle:
                handle.write("".join(f"{table}\t{row_id}\n" for row_id in ids))
        suspects = self._suspects[table]
        if suspects:
            suspects.difference_update(ids)

    def advance(self) -> dict[str, Any]:
        """At a snapshot, after every row is durable: the state to keep, and a new generation.
        The carried suspects are rewritten without the ones the replay has reached."""
        state = {"generation": self.generation, "check_all": self.check_all}
        self.generation += 1
        if self._dir is not None:
            _write_atomically(self._dir / "suspects.ids", self._lines())
            for number, path in self._generation_files():
                if number < self.generation - KEEP_GENERATIONS:
                    (self._dir / "complete").unlink(missing_ok=True)
                    path.unlink()
        return state

    def _generation_files(self) -> list[tuple[int, Path]]:
        assert self._dir is not None
        return sorted((int(path.stem), path) for path in self._dir.glob("*.ids") if path.stem.isdigit())

    def _load(self, path: Path) -> None:
        for line in path.read_text().splitlines():
            table, _, row_id = line.partition("\t")
            if table in self._suspects and row_id:
                self._suspects[table].add(row_id)

    def _lines(self) -> str:
        return "".join(f"{table}\t{row_id}\n" for table, ids in self._suspects.items() for row_id in ids)


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    os.replace(partial, path)

"""A store user in a process of its own, for the suite's cross-process races.

`python -m tests.storage.racer SPEC NAME`

It opens the store SPEC (JSON, tests/storage/backends.py `Backend.spec`) names, prints `ready`,
waits for a line on stdin so that every racer starts together, then: moves `race-cas` from
validated to approved (tier = NAME), inserts a proposal of its own id under the shared key
`race-key`, and prints one JSON line of what it saw.
"""

from __future__ import annotations

import json
import sys

from sidecar.errors import IllegalTransition
from sidecar.proposals.lifecycle import State
from tests.storage.backends import open_store
from tests.storage.samples import record


def main() -> None:
    spec, name = json.loads(sys.argv[1]), sys.argv[2]
    store = open_store(spec)
    try:
        store.get("race-cas")  # connect before the start line, not after it
        print("ready", flush=True)
        sys.stdin.readline()
        try:
            store.transition("race-cas", State.VALIDATED, State.APPROVED, tier=name)
            won = True
        except IllegalTransition:
            won = False
        stored, created = store.insert_or_get(
            record(f"race-{name}", key="race-key", payload_sha256=name * 64)
        )
        print(json.dumps({"won": won, "created": created, "id": stored.proposal_id}), flush=True)
    finally:
        store.close()


if __name__ == "__main__":
    main()

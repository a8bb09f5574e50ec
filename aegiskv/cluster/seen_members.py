"""Every member gossip has reported, as last reported, bounded however often node ids change.

The dashboard lists dead members too, which the membership's live list no
longer has. A node that restarts without its data directory (a container
without a volume) comes back under a new id at the same address, so keeping
every id ever seen would grow without end. Two rules bound it: a member
reported at an address replaces whatever other id was last seen there, and
past ``limit`` entries the longest-unchanged ones go first.
"""

from __future__ import annotations

from aegiskv.cluster.interfaces import MemberView

SEEN_LIMIT = 1024  # far more members than a cluster runs; reached only by id churn


class SeenMembers:
    def __init__(self, limit: int = SEEN_LIMIT) -> None:
        self._limit = limit
        self._by_id: dict[str, MemberView] = {}  # oldest change first (re-inserted on each change)
        self._id_at: dict[tuple[str, int], str] = {}

    def note(self, member: MemberView) -> None:
        """Remember ``member`` as it is now; forget an older id at its address and the oldest past the limit."""
        address = (member.address[0], member.address[1])
        previous = self._id_at.get(address)
        if previous is not None and previous != member.node_id:
            self._by_id.pop(previous, None)
        self._id_at[address] = member.node_id
        self._by_id.pop(member.node_id, None)
        self._by_id[member.node_id] = member
        while len(self._by_id) > self._limit:
            oldest = next(iter(self._by_id))
            self._forget(oldest)

    def _forget(self, node_id: str) -> None:
        member = self._by_id.pop(node_id)
        address = (member.address[0], member.address[1])
        if self._id_at.get(address) == node_id:
            del self._id_at[address]

    def as_dict(self) -> dict[str, MemberView]:
        return dict(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

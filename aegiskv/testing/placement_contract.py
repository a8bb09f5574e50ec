"""The conformance suite every placement passes: AegisKV's ring, and a plugin's.

Subclass :class:`PlacementContract` under a name pytest collects and say how
to build your placement from its options::

    from aegiskv.plugin_api import Placement, PlacementOptions
    from aegiskv.testing.placement_contract import PlacementContract

    class TestMyPlacement(PlacementContract):
        def make_placement(self, options: PlacementOptions) -> Placement:
            return MyPlacement(options)

The tests hold a placement to what AegisKV relies on (see
:class:`aegiskv.plugin_api.Placement`): the shape of every answer
(:func:`aegiskv.testing.placement_checks.check_assignment`), determinism
across instances and member order, and movement bounded by about 1/N when a
member joins or leaves (under the first option set). Set
:attr:`PlacementContract.option_sets` to run them under other options too.
Like the backend suite it imports no pytest; for pytest's assertion messages
add ``pytest.register_assert_rewrite("aegiskv.testing")`` to your ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

from aegiskv.plugin_api import DEFAULT_PLACEMENT_OPTIONS, Placement, PlacementOptions
from aegiskv.testing.placement_checks import check_assignment, check_placement, moved_fraction


class PlacementContract:
    """The suite; subclass it as ``Test<YourPlacement>`` and override :meth:`make_placement`."""

    # The options each test runs under (the node's defaults unless a subclass adds more).
    option_sets: Sequence[PlacementOptions] = (DEFAULT_PLACEMENT_OPTIONS,)

    def make_placement(self, options: PlacementOptions) -> Placement:
        """Build the placement under test, as the plugin loader calls its factory."""
        raise NotImplementedError(f"{type(self).__name__} must say how to build its placement (make_placement)")

    def test_passes_the_placement_checks(self) -> None:
        for options in self.option_sets:
            check_placement(self.make_placement, options)

    def test_no_members_no_replicas(self) -> None:
        for options in self.option_sets:
            assert self.make_placement(options).assign([], 16, 3) == [()] * 16

    def test_duplicate_member_names_count_once(self) -> None:
        # A view may list a member twice in a race; it still holds one copy of a shard.
        for options in self.option_sets:
            placement = self.make_placement(options)
            answer = placement.assign(["a", "b", "a", "c"], 32, 3)
            check_assignment(answer, ["a", "b", "c"], 32, 3)
            assert answer == placement.assign(["a", "b", "c"], 32, 3)

    def test_a_join_or_a_leave_moves_about_one_nth(self) -> None:
        # A change of membership copies data over the network: about 1/N of the
        # replicas should move, far from a reshuffle (bench/placement_sim.py). Under
        # the first option set only: degenerate options (one point per node, no
        # slack) may legitimately move more.
        placement = self.make_placement(self.option_sets[0])
        for size in (5, 10):
            members = [f"node-{index}" for index in range(size)]
            before = placement.assign(members, 256, 3)
            joined = placement.assign([*members, "joiner"], 256, 3)
            assert moved_fraction(before, joined) <= 2 / (size + 1), f"a join to {size} members"
            left = placement.assign(members[1:], 256, 3)
            assert moved_fraction(before, left) <= 2 / size, f"a leave from {size} members"

"""Who owns what: key -> slot -> shard mapping (and, later, membership and placement)."""

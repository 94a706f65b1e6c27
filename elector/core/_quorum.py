"""Majority arithmetic."""


def majority(n: int) -> int:
    """Smallest number of members that any two such sets share at least one of."""
    return n // 2 + 1


def cannot_reach(n: int, refused: int) -> bool:
    """True once so many members refused that the rest can no longer make a majority."""
    return n - refused < majority(n)

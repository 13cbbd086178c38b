"""In-memory twins of the ports (core.ports): each passes the same contract suite as the real
adapter (tests/contract), so a unit test that uses a twin relies only on what the real thing does.
"""

from tests.twins.broker import MemoryBroker, MemoryDelivery, MemoryNode, Parked
from tests.twins.notifier import MemoryNotifier

__all__ = ["MemoryBroker", "MemoryDelivery", "MemoryNode", "MemoryNotifier", "Parked"]

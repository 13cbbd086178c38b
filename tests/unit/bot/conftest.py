from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.bot.standins import World, make_world


@pytest.fixture
def world(tmp_path) -> Iterator[World]:
    world = make_world(tmp_path)
    yield world
    world.close()

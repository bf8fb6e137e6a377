"""spin-py: never returns (a test of the call's deadline on CPython)."""

import wit_world
from wit_world.imports import types


class WitWorld(wit_world.WitWorld):
    def metadata(self) -> types.Metadata:
        return types.Metadata(
            name="spin-py", version="0.1.0", description="Never returns.", deterministic=False
        )

    def invoke(self, text: str) -> str:
        n = 0
        while True:
            n += 1

"""The {{name}} operator, an xcs operator in Python (written by `xcs new`).

`invoke` is the world's export (wit/world.wit): change its signature there
and here together. Returning a value is `ok`; raising `Err(types.Error(...))`
is an operator error with that code, message and retryable flag.
"""

import wit_world
from wit_world.imports import types
from componentize_py_types import Err


class WitWorld(wit_world.WitWorld):
    def metadata(self) -> types.Metadata:
        return types.Metadata(
            name="{{name}}",
            version="0.1.0",
            description="Upper-cases a text.",
            # The result depends only on the input: the host may cache it.
            deterministic=True,
        )

    def invoke(self, text: str) -> str:
        if not text:
            raise Err(
                types.Error(code="empty", message="the text is empty", retryable=False)
            )
        return text.upper()

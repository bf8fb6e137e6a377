"""word-stats: an xcs operator in Python (componentize-py).

Build: ./build.sh (needs `pip install componentize-py==0.25.1`).
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports import types


class WitWorld(wit_world.WitWorld):
    def metadata(self) -> types.Metadata:
        return types.Metadata(
            name="word-stats",
            version="0.1.0",
            description="Counts the words and lines of a text and finds its longest word.",
            deterministic=True,
        )

    def invoke(self, text: str) -> wit_world.Stats:
        words = text.split()
        if not words:
            # An operator error: the host reports code, message and
            # retryable flag as they are (exit code 5 from `xcs call`).
            raise Err(
                types.Error(
                    code="empty", message="the text has no words", retryable=False
                )
            )
        return wit_world.Stats(
            words=len(words),
            lines=len(text.splitlines()),
            longest=max(words, key=len),
        )

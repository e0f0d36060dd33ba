"""Test-only callback: takes SIGINT over from ansible-core with a handler that notes the signal
and lets the play go on. It stands in for a KeyboardInterrupt Python drops (one raised while the
main thread runs an at-fork hook), which a CI run saw: the play completed after the interrupt."""

from __future__ import annotations

import os
import signal

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "swallow_sigint"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Loaded after ansible-core installed its own handler, before ara_spool's play start.
        signal.signal(signal.SIGINT, self._noted)

    def _noted(self, sig, frame) -> None:
        with open(os.environ["SWALLOW_SIGINT_NOTE"], "a") as fh:
            fh.write(f"{sig}\n")

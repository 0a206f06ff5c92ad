"""Config keys that name an environment variable (``api_key_env``, ``bot_token_env``, ...).

Secrets live in the environment, and the config file names the variable. A common slip is to
paste the secret itself where its variable's name belongs; every later message that names the
variable ("environment variable ... is not set") would then print the secret. So such a value is
checked to be a variable name (letters, digits and ``_``, not starting with a digit), and the
error for one that is not never repeats it. API keys, bot tokens and webhook URLs all contain
characters a name cannot (``-``, ``:``, ``/``), so they are caught here.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

__all__ = ["EnvName"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            "must be the name of an environment variable (letters, digits and _), not its value;"
            " the value is not shown here in case it is the secret itself"
        )
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]

#!/usr/bin/env python3
"""halab command line. Thin: parse arguments, call halab, print."""

import os
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_VENV_PY = _HERE / ".venv" / "bin" / "python"
# Run inside the project's venv without an activation step.
if Path(sys.prefix).resolve() != (_HERE / ".venv").resolve() and _VENV_PY.exists():
    os.execv(str(_VENV_PY), [str(_VENV_PY), str(Path(__file__).resolve()), *sys.argv[1:]])
sys.path.insert(0, str(_HERE))

from cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

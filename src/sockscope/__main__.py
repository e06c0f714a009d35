from __future__ import annotations

import sys

from sockscope.cli import main

sys.exit(main())

"""`python -m conduit_sidecar` is `conduit-sidecar` (serve | stats | demo)."""

import sys

from conduit_sidecar.cli import main

sys.exit(main())

"""``python -m auditcam`` runs the command line."""

import sys

from auditcam.cli import main

sys.exit(main())

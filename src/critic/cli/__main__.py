"""`python -m critic.cli` (and `torchrun -m critic.cli`): the `critic` command."""

import sys

from critic.cli import main

sys.exit(main())

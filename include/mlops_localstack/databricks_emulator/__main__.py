"""``python -m mlops_localstack.databricks_emulator``: serve the emulator until Ctrl-C."""

import sys

from mlops_localstack.databricks_emulator.emulator import main

sys.exit(main())

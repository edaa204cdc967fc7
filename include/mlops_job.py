"""spark-submit application file for ``mlops-job``.

It lives outside the ``mlops_jobs`` package so that Python's script directory (first on
``sys.path``) is ``include/`` and no module of the package can shadow a library of the same name.
"""

import sys

from mlops_jobs.cli import main

if __name__ == "__main__":
    sys.exit(main())

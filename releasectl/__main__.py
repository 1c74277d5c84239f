"""`python -m releasectl`, the same as the `releasectl` console script."""

from releasectl.cli import main

main()

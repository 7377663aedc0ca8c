"""`python -m workers.cli ARGS` is `nlphub ARGS` (how `nlphub up` starts its own commands)."""

from workers.cli import main

main()

"""`python -m respaths ...` is the `respaths` command."""
from .cli import main

raise SystemExit(main())

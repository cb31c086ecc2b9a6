"""__main__.py: ``python -m coextra_profiler [-o out.prof] [-s sort] [-m module | script.py] [args]``, like ``python -m cProfile``."""
from coextra_profiler import main

main()

"""__main__.py: `python -m coextra_debugger [-c command] script.py [args]`, like `python -m pdb`."""

# pdb clears __main__.__dict__ (this module, while it runs) before running
# the script, so everything lives in the package and nothing here is used
# after the call; pdb's own `python -m pdb` does the same.
import coextra_debugger

coextra_debugger.main()

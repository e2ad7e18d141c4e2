"""The lowest floor: errors with stable codes, signals, time, progress, CPU counts, units.

Imports nothing else of the package; every other layer may import it."""

"""selfalign: align a small open language model with its own outputs, round after round.

Nothing heavy is imported here: `selfalign --help` must answer at once.
"""

__version__ = "0.1.0"

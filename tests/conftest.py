import os
import sys

# The helpers and the torch reference live beside the tests.
sys.path.insert(0, os.path.dirname(__file__))

# Hypothesis: CI runs a fixed, modest set of examples (derandomized, so a failure
# reproduces); `pytest --hypothesis-profile=long` runs many more, randomly.
try:
    from hypothesis import settings
except ImportError:  # hypothesis is a test extra
    pass
else:
    settings.register_profile("ci", max_examples=100, derandomize=True, deadline=None,
                              database=None, print_blob=True)
    settings.register_profile("long", max_examples=20_000, deadline=None, print_blob=True)
    settings.load_profile("ci")

import os
import sys

# The helpers and the torch reference live beside the tests.
sys.path.insert(0, os.path.dirname(__file__))

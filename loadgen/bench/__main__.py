"""`python -m loadgen.bench`"""
import sys

from .run import main

sys.exit(main())

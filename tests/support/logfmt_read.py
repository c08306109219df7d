#!/usr/bin/env python3
"""Independent reader for the log tests: parses a log file with the `logfmt` package
(PyPI) and prints one JSON list, one object per line, as a logfmt consumer sees them.

usage: logfmt_read.py PATH
"""
import io
import json
import sys

import logfmt

with open(sys.argv[1], encoding="utf-8") as f:
    lines = [l for l in f.read().splitlines() if l]
print(json.dumps([dict(next(logfmt.parse(io.StringIO(l)))) for l in lines]))

#!/usr/bin/env python3
"""Runs ../shared/fixtures/tools/make_expected.py unchanged except for its list of file types, which
names only the fixture set's own (f32 Q8_0 Q4_0 Q4_K_M Q5_K_M Q6_K).
usage: make_expected.py SHARED_MAKE_EXPECTED FTYPE[,FTYPE...] -- <make_expected.py arguments>"""
import sys

path, ftypes = sys.argv[1], tuple(sys.argv[2].split(","))
assert sys.argv[3] == "--"
src = open(path).read()
old = '("f32", "Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K")'
assert src.count(old) == 1, "make_expected.py changed: update this wrapper"
src = src.replace(old, repr(("f32",) + ftypes))
sys.argv = [path] + sys.argv[4:]
exec(compile(src, path, "exec"), {"__name__": "__main__", "__file__": path})

#!/usr/bin/env python3
"""The arrows between modules point one way. Every src/<module>/ is a static
library declared in CMakeLists.txt with the modules it may use
(lb_module(name deps...)); the include path is all of src/, so the linker
alone would not catch an arrow the wrong way. This check does: each
#include "<module>/..." in src/<m>/ must name m itself or a module m uses,
directly or through its dependencies. And no two files of src/api/ call
each other, directly or through other files. Exits 1 naming each offence.

usage: layering.py [ROOT]"""

import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
cmake = open(os.path.join(root, "CMakeLists.txt")).read()
deps = {}
for m in re.finditer(r"^lb_module\((\w+)\s+([^)]*)\)", cmake, re.M):
    deps[m.group(1)] = [d[3:] for d in m.group(2).split() if d.startswith("lb_")]
if not deps:
    sys.exit("layering.py: no lb_module() in CMakeLists.txt")


def reach(m, seen=None):
    seen = set() if seen is None else seen
    for d in deps.get(m, []):
        if d not in seen:
            seen.add(d)
            reach(d, seen)
    return seen


bad = []
src = os.path.join(root, "src")
for mod in sorted(os.listdir(src)):
    d = os.path.join(src, mod)
    if not os.path.isdir(d) or mod not in deps:
        continue
    allowed = reach(mod) | {mod}
    for name in sorted(os.listdir(d)):
        if not name.endswith((".c", ".h")):
            continue
        for n, line in enumerate(open(os.path.join(d, name)), 1):
            m = re.match(r'\s*#\s*include\s+"(\w+)/', line)
            if m and m.group(1) in deps and m.group(1) not in allowed:
                bad.append("src/%s/%s:%d: %s may not include %s/ (it uses: %s)"
                           % (mod, name, n, mod, m.group(1), ", ".join(sorted(allowed - {mod})) or "nothing"))
# Inside src/api/ the files call down and into helpers, never round in a
# circle: file A uses file B when A names an lb_api_ function (or table)
# that B defines. No exceptions.
KNOWN = set()
api = os.path.join(src, "api")
defined, names = {}, {}
for name in sorted(os.listdir(api)) if os.path.isdir(api) else []:
    if not name.endswith(".c"):
        continue
    text = re.sub(r"/\*.*?\*/", "", open(os.path.join(api, name)).read(), flags=re.S)
    for m in re.finditer(r"^(?!static\b)[A-Za-z_][\w \*]*?\b(lb_api_\w+)\s*(?:\([^;{]*\)\s*\{|\[\])",
                         text, re.M):
        defined[m.group(1)] = name
    names[name] = set(re.findall(r"\b(lb_api_\w+)\b", text))
uses = {n: {defined[f] for f in fs if f in defined and defined[f] != n and (n, defined[f]) not in KNOWN}
        for n, fs in names.items()}


def reaches(a, b):
    seen, todo = set(), [a]
    while todo:
        for x in uses.get(todo.pop(), ()):
            if x == b:
                return True
            if x not in seen:
                seen.add(x)
                todo.append(x)
    return False


circles = sorted({tuple(sorted((a, b))) for a in uses for b in uses[a] if reaches(b, a)})
for a, b in circles:
    bad.append("src/api/%s and src/api/%s call each other (directly or through other files)" % (a, b))
for b in bad:
    print(b)
print("layering: %d module(s), %d include(s) against the arrows or circle(s) in src/api/"
      % (len(deps), len(bad)))
sys.exit(1 if bad else 0)

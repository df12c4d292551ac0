#!/usr/bin/env python3
"""The slowest crates of a `cargo build --timings` report (cargo-timing.html).

Cargo embeds its unit data as a JavaScript array (`const UNIT_DATA = [...]`);
this prints the ten longest units, one per line, for BENCHMARKS.md."""
import json
import re
import sys

html = open(sys.argv[1], encoding="utf-8").read()
match = re.search(r"const UNIT_DATA = (\[.*?\]);\n", html, re.S)
if not match:
    print("(no unit data in the timings report)")
    sys.exit(0)
units = json.loads(match.group(1))
total = max((u["start"] + u["duration"] for u in units), default=0.0)
print(f"Wall time of the build per cargo: {total:.1f} s over {len(units)} units. The ten slowest units:")
print()
print("| unit | seconds | of which codegen after metadata |")
print("|---|---|---|")
for unit in sorted(units, key=lambda u: u["duration"], reverse=True)[:10]:
    name = f'{unit["name"]} {unit.get("version", "")}'.strip()
    target = unit.get("target", "").strip()
    if target:
        name += f" ({target.strip()})"
    rmeta = unit.get("rmeta_time")
    codegen = f'{unit["duration"] - rmeta:.1f}' if rmeta is not None else "n/a"
    print(f'| {name} | {unit["duration"]:.1f} | {codegen} |')

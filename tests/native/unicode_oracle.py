#!/usr/bin/env python3
"""CPython as the oracle for the tokenizer's Unicode code: NFC and str.lower() of every code point and of random
mark sequences, and the letter/number class of every assigned code point, compared with
`shira-worker-tests unicode-dump`. Skips (exit 0, saying so) when this Python's Unicode version is not the one
the tables were generated from (native/src/tokenizers/unicode_tables.inc, first lines).

usage: unicode_oracle.py <shira-worker-tests> <unicode_tables.inc>
"""
import random
import re
import subprocess
import sys
import unicodedata


def main():
    binary, tables = sys.argv[1], sys.argv[2]
    with open(tables, encoding="utf-8") as f:
        header = f.read(400)
    version = re.search(r"unicodedata (\d+\.\d+\.\d+)", header).group(1)
    if unicodedata.unidata_version != version:
        print(f"unicode oracle: skipped, Python has Unicode {unicodedata.unidata_version}, tables {version}")
        return 0

    cases = [chr(cp) for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
    # Mark sequences: starters followed by marks of mixed classes exercise ordering, blocking and recomposition.
    rng = random.Random(0)
    starters = [c for c in "aeiouAEIOUnNcCsSzZyY\u0391\u0395\u03b1\u03c9\u0410\u0435\u1100\u1161\u11a8\uac00\u0915"]
    marks = [chr(cp) for cp in range(0x300, 0x370)] + ["\u0323", "\u0328", "\u093c", "\u0f71", "\u05b0", "\u1161", "\u11a8"]
    for _ in range(20000):
        s = "".join(rng.choice(starters) + "".join(rng.choice(marks) for _ in range(rng.randint(0, 4)))
                    for _ in range(rng.randint(1, 3)))
        cases.append(s)
    # Final sigma in context.
    cases += ["\u03a3", "A\u03a3", "A\u03a3B", "A\u03a3 ", "A\u03a3'", "A'\u03a3", "\u0391\u03a3\u0301", "1\u03a3", "\u03a3\u03a3"]

    payload = "\n".join(c.encode("utf-8").hex() for c in cases) + "\n"
    out = subprocess.run([binary, "unicode-dump"], input=payload, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert len(lines) == len(cases), (len(lines), len(cases))
    bad = {"nfc": 0, "lower": 0, "class": 0}
    examples = []
    for text, line in zip(cases, lines):
        nfc_hex, lower_hex, cls = line.split()
        got_nfc = bytes.fromhex(nfc_hex if nfc_hex != "-" else "").decode("utf-8")
        got_lower = bytes.fromhex(lower_hex if lower_hex != "-" else "").decode("utf-8")
        checks = [("nfc", got_nfc, unicodedata.normalize("NFC", text)), ("lower", got_lower, text.lower())]
        if len(text) == 1 and unicodedata.category(text) != "Cn":
            cat = unicodedata.category(text)
            want = 1 if cat[0] == "L" else 2 if cat[0] == "N" else None
            if want is not None or int(cls) in (1, 2):
                checks.append(("class", int(cls), want))
        for what, got, want in checks:
            if got != want:
                bad[what] += 1
                if len(examples) < 10:
                    examples.append(f"{what} {text.encode('unicode_escape')}: got {got!r} want {want!r}")
    print(f"unicode oracle: {len(cases)} strings; mismatches nfc {bad['nfc']}, lower {bad['lower']}, "
          f"class {bad['class']}")
    for e in examples:
        print("  " + e)
    return 1 if any(bad.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

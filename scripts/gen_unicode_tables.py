#!/usr/bin/env python3
"""Generates include/loom/tokenizer/unicode_tables.hpp from the Unicode Character Database.

Input: the UCD text files as installed by Debian's `unicode-data` package (/usr/share/unicode),
or any directory holding UnicodeData.txt, PropList.txt, CaseFolding.txt,
DerivedNormalizationProps.txt and DerivedCoreProperties.txt of one Unicode version.

Usage: scripts/gen_unicode_tables.py [UCD_DIR] [OUTPUT]
Standard library only. The output is deterministic for a given UCD version.
"""
import os
import re
import sys

# Order matters: the C++ enum `GeneralCategory` is emitted in this order.
CATEGORIES = [
    "Cn", "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No",
    "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So",
    "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co",
]


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                yield line


def unicode_version(ucd):
    with open(os.path.join(ucd, "DerivedCoreProperties.txt"), encoding="utf-8") as f:
        m = re.search(r"DerivedCoreProperties-(\d+\.\d+\.\d+)\.txt", f.readline())
    if not m:
        sys.exit("cannot find the Unicode version in DerivedCoreProperties.txt")
    return m.group(1)


def general_category_runs(ucd):
    """(first, last, category) runs of equal general category; unassigned code points omitted."""
    rows = []
    start = None
    for line in read_lines(os.path.join(ucd, "UnicodeData.txt")):
        fields = line.split(";")
        cp, name, gc = int(fields[0], 16), fields[1], fields[2]
        if name.endswith(", First>"):
            start = cp
            continue
        if name.endswith(", Last>"):
            rows.append((start, cp, gc))
            continue
        rows.append((cp, cp, gc))
    runs = []
    for first, last, gc in rows:
        if runs and runs[-1][2] == gc and runs[-1][1] + 1 == first:
            runs[-1][1] = last
        else:
            runs.append([first, last, gc])
    return runs


def property_ranges(ucd, filename, prop):
    out = []
    for line in read_lines(os.path.join(ucd, filename)):
        cps, name = [s.strip() for s in line.split(";")[:2]]
        if name != prop:
            continue
        a, _, b = cps.partition("..")
        out.append((int(a, 16), int(b or a, 16)))
    out.sort()
    merged = []
    for a, b in out:
        if merged and merged[-1][1] + 1 == a:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return merged


def nfc_quick_check(ucd):
    """(first, last, 'N' or 'M') ranges of NFC_Quick_Check No / Maybe."""
    out = []
    for line in read_lines(os.path.join(ucd, "DerivedNormalizationProps.txt")):
        fields = [s.strip() for s in line.split(";")]
        if len(fields) < 3 or fields[1] != "NFC_QC":
            continue
        a, _, b = fields[0].partition("..")
        out.append((int(a, 16), int(b or a, 16), fields[2]))
    out.sort()
    return out


def combining_classes(ucd):
    """(first, last, ccc) runs of equal non-zero Canonical_Combining_Class."""
    runs = []
    for line in read_lines(os.path.join(ucd, "UnicodeData.txt")):
        fields = line.split(";")
        cp, ccc = int(fields[0], 16), int(fields[3])
        if ccc == 0:
            continue
        if runs and runs[-1][2] == ccc and runs[-1][1] + 1 == cp:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp, ccc])
    return runs


def ascii_case_folds(ucd):
    """Code points whose simple case folding (status C or S) is an ASCII lowercase letter."""
    out = []
    for line in read_lines(os.path.join(ucd, "CaseFolding.txt")):
        code, status, mapping = [s.strip() for s in line.split(";")[:3]]
        if status not in ("C", "S"):
            continue
        target = int(mapping, 16)
        if ord("a") <= target <= ord("z"):
            out.append((int(code, 16), target))
    out.sort()
    return out


def emit_rows(items, per_line):
    lines = []
    for i in range(0, len(items), per_line):
        lines.append("    " + " ".join(items[i:i + per_line]))
    return "\n".join(lines)


def main():
    ucd = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/unicode"
    here = os.path.dirname(os.path.abspath(__file__))
    out_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        here, "..", "include", "loom", "tokenizer", "unicode_tables.hpp")
    version = unicode_version(ucd)
    major, minor, patch = version.split(".")
    runs = general_category_runs(ucd)
    ws = property_ranges(ucd, "PropList.txt", "White_Space")
    folds = ascii_case_folds(ucd)
    nfc_qc = nfc_quick_check(ucd)
    cccs = combining_classes(ucd)

    cat_rows = ["{0x%X, 0x%X, %s}," % (a, b, g) for a, b, g in runs]
    ws_rows = ["{0x%X, 0x%X}," % (a, b) for a, b in ws]
    fold_rows = ["{0x%X, '%s'}," % (a, chr(t)) for a, t in folds]
    qc_rows = ["{0x%X, 0x%X, %s}," % (a, b, "true" if v == "M" else "false") for a, b, v in nfc_qc]
    ccc_rows = ["{0x%X, 0x%X, %d}," % (a, b, c) for a, b, c in cccs]
    enum_body = ", ".join(CATEGORIES)

    text = f"""// GENERATED FILE - DO NOT EDIT. Produced by scripts/gen_unicode_tables.py from the Unicode
// Character Database {version} (UnicodeData.txt, PropList.txt, CaseFolding.txt,
// DerivedNormalizationProps.txt, as shipped by Debian's package `unicode-data`).
// Regenerate with: python3 scripts/gen_unicode_tables.py /usr/share/unicode
//
// Tables of sorted, non-overlapping, inclusive code-point ranges; look-ups are binary searches
// (see loom/tokenizer/unicode.hpp).
#pragma once

#include <cstdint>

namespace loom::unicode {{

/// The Unicode version these tables were generated from.
inline constexpr int kVersionMajor = {major};
inline constexpr int kVersionMinor = {minor};
inline constexpr int kVersionPatch = {patch};
inline constexpr const char* kVersion = "{version}";

/// Unicode General_Category values (two-letter aliases). Cn = unassigned.
enum class GeneralCategory : std::uint8_t {{ {enum_body} }};

namespace detail {{

struct CategoryRange {{
  char32_t first;
  char32_t last;
  GeneralCategory category;
}};

struct Range {{
  char32_t first;
  char32_t last;
}};

struct QuickCheckRange {{
  char32_t first;
  char32_t last;
  bool maybe;  // NFC_QC = Maybe (else No)
}};

struct ClassRange {{
  char32_t first;
  char32_t last;
  std::uint8_t ccc;  // Canonical_Combining_Class
}};

struct FoldPair {{
  char32_t code;
  char folded;  // an ASCII lowercase letter
}};

using enum GeneralCategory;

// General_Category of every assigned code point, as runs of equal category ({len(runs)} runs).
// Code points not covered are unassigned (Cn).
inline constexpr CategoryRange kCategoryRanges[] = {{
{emit_rows(cat_rows, 5)}
}};

// White_Space property from PropList.txt ({len(ws)} ranges).
inline constexpr Range kWhiteSpaceRanges[] = {{
{emit_rows(ws_rows, 6)}
}};

// NFC_Quick_Check No / Maybe from DerivedNormalizationProps.txt ({len(nfc_qc)} ranges); all others
// are Yes.
inline constexpr QuickCheckRange kNfcQuickCheckRanges[] = {{
{emit_rows(qc_rows, 4)}
}};

// Non-zero Canonical_Combining_Class from UnicodeData.txt ({len(cccs)} runs); all others are 0.
inline constexpr ClassRange kCombiningClassRanges[] = {{
{emit_rows(ccc_rows, 5)}
}};

// Code points whose simple case folding (CaseFolding.txt status C or S) is an ASCII lowercase
// letter; used for case-insensitive matching of ASCII patterns such as (?i:'s|'t|...).
inline constexpr FoldPair kAsciiFolds[] = {{
{emit_rows(fold_rows, 6)}
}};

}}  // namespace detail
}}  // namespace loom::unicode
"""
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {out_path}: Unicode {version}, {len(runs)} category runs, "
          f"{len(ws)} white-space ranges, {len(folds)} ASCII folds, {len(nfc_qc)} NFC_QC ranges, "
          f"{len(cccs)} combining-class runs")


if __name__ == "__main__":
    main()

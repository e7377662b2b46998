#!/usr/bin/env bash
# check.sh: the project's style check for its C code, after OpenResty's
# ngx-style.pl: nginx style in ngx_voice_module/, proto/, common/ and
# bridged/.
#
# It checks what a reviewer should never have to point out: lines over 80
# columns, tabs, trailing blanks, C++ comments, a missing opening comment
# paragraph, a single blank line between top-level items where nginx puts
# two.  Exit status 1 and one line per finding when something is wrong.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 1

files=$(ls ngx_voice_module/*.[ch] proto/*.[ch] common/*.[ch] bridged/*.[ch] \
        2>/dev/null)
[ -n "$files" ] || { echo "style: no files"; exit 1; }

awk '
FNR == 1 {
    if ($0 !~ /^\/\*/) {
        printf "%s:1: no opening comment paragraph\n", FILENAME; bad++
    }
    l1 = "x"; l2 = "x"; l3 = "x"
}
{
    if (length($0) > 80) {
        printf "%s:%d: longer than 80 columns\n", FILENAME, FNR; bad++
    }
    if ($0 ~ /\t/) { printf "%s:%d: tab\n", FILENAME, FNR; bad++ }
    if ($0 ~ /[ ]+$/) {
        printf "%s:%d: trailing blank\n", FILENAME, FNR; bad++
    }
    if ($0 ~ /^[ ]*\/\// || $0 ~ /;[ ]*\/\//) {
        printf "%s:%d: C++ comment\n", FILENAME, FNR; bad++
    }
    # a definition: the name at column 0, its return type on the line
    # above, and two blank lines above that
    if ($0 ~ /^[a-z_][a-z0-9_]*\(/ && l1 ~ /^[a-z]/ && l2 == "" && l3 != "" && l3 !~ /\*\/$/) {
        printf "%s:%d: one blank line before a definition (nginx uses two)\n", FILENAME, FNR; bad++
    }
    l3 = l2; l2 = l1; l1 = $0
}
END { exit bad > 0 }
' $files
rc=$?
[ $rc -eq 0 ] && echo "style: $(echo "$files" | wc -w) files clean"
exit $rc

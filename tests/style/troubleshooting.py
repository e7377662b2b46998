"""troubleshooting.py: every error-level log line is in the docs.

docs/troubleshooting.md promises to list every error-level line of nginx's
module (NGX_LOG_ERR and above, and nginx -t's emerg lines) and of bridged
(BD_LOG_ERROR), with what it means and what to do.  This finds each such
call in the sources, takes the longest piece of its format string between
conversions (the words an operator greps for), and checks the document has
it.  Exit status 1 and one line per line not documented.
"""

import glob
import os
import re
import sys

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

CALL = re.compile(
    r'(?:ngx_log_error\s*\(\s*NGX_LOG_(?:ERR|CRIT|ALERT|EMERG)'
    r'|ngx_conf_log_error\s*\(\s*NGX_LOG_EMERG'
    r'|bd_log\s*\(\s*BD_LOG_ERROR)'
    r'[^"]*?((?:"(?:[^"\\]|\\.)*"\s*)+)')
STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
CONVERSION = re.compile(r'%[-#+ 0-9.*]*[a-zA-Z]+|\\n')


def words(fmt):
    """the longest constant piece of a format, as the log shows it"""
    parts = [p.replace("voice: ", "").strip(" :,")
             for p in CONVERSION.split(fmt.replace('\\"', '"'))]
    return max(parts, key=len) if parts else ""


def main():
    doc = open(os.path.join(TOP, "docs/troubleshooting.md")).read()
    missing = 0
    files = sorted(glob.glob(os.path.join(TOP, "ngx_voice_module/*.c"))
                   + glob.glob(os.path.join(TOP, "bridged/*.c")))
    for path in files:
        src = open(path).read()
        for m in CALL.finditer(src):
            piece = words("".join(STRING.findall(m.group(1))))
            if len(piece) < 8:
                continue        # "%s: %s": the words are the argument's
            if piece not in doc and piece[:30] not in doc:
                line = src.count("\n", 0, m.start()) + 1
                print("%s:%d: not in docs/troubleshooting.md: \"%s\"" % (
                    os.path.relpath(path, TOP), line, piece))
                missing += 1
    if missing:
        return 1
    print("troubleshooting: every error-level line of %d files documented"
          % len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""tools/render.py: renders a template of conf/ (nginx.conf.in,
simulation.conf.in) by replacing each @NAME@ with its value.

The one renderer of the project: build.sh (./build.sh run), the
benchmark and the soak (bench/benchlib.py imports render()) and the
end-to-end tests (tests/e2e/conftest.py imports render()) all
render conf/nginx.conf.in through it, so the configuration under test is
the one that runs.  A name without a value becomes the empty string (the
template's optional include points stay empty); a value is inserted as
it is, never rendered again.

    /usr/bin/python3 tools/render.py TEMPLATE [-o DEST] [NAME=VALUE ...]

writes the rendered text to DEST (standard output without -o).
"""

import argparse
import pathlib
import re
import sys

NAME = re.compile(r"@([A-Z_]+)@")


def render(template, values):
    """the text of the template file, each @NAME@ replaced by
    values[NAME] (str() of it), or by nothing without one"""
    text = pathlib.Path(template).read_text()
    return NAME.sub(lambda m: str(values.get(m.group(1), "")), text)


def main(argv):
    ap = argparse.ArgumentParser(
        prog="render.py", description="renders a conf/*.in template")
    ap.add_argument("template")
    ap.add_argument("values", nargs="*", metavar="NAME=VALUE")
    ap.add_argument("-o", dest="out", help="where to write (default stdout)")
    args = ap.parse_intermixed_args(argv)
    values = {}
    for v in args.values:
        name, eq, value = v.partition("=")
        if not eq or not NAME.fullmatch("@%s@" % name):
            ap.error("not NAME=VALUE with NAME in [A-Z_]: %r" % v)
        values[name] = value
    try:
        text = render(args.template, values)
    except OSError as e:
        ap.error("cannot read the template: %s" % e)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    # whole or not at all: nginx never reads half a configuration
    tmp = pathlib.Path(args.out + ".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

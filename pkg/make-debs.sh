#!/usr/bin/env bash
# pkg/make-debs.sh TOP BUILD: the two Debian packages of the voice bridge,
# libnginx-mod-http-voice and voice-bridged, from what ./build.sh build
# put in BUILD; the .debs go to BUILD/pkg.  Called by ./build.sh package.
#
# pkg/debian is copied into BUILD/pkg/src, with a changelog whose version
# comes from the commit (its date, so that a later commit upgrades an
# earlier one, and its hash), and debhelper builds the binary packages
# there (pkg/debian/rules says what each step does).  lintian checks them
# when it is installed; any error fails the build.
set -euo pipefail

TOP=$1
BUILD=$2
OUT=$BUILD/pkg
SRC=$OUT/src

say() { printf '%s\n' "make-debs: $*" >&2; }

for f in "$BUILD/nginx/ngx_http_voice_module.so" "$BUILD/bridged/bridged"; do
    [ -f "$f" ] || { say "error: $f is missing: run ./build.sh build"; exit 1; }
done

stamp=$(date -u +%Y%m%d%H%M%S)
commit=unknown
if git -C "$TOP" rev-parse --verify -q HEAD > /dev/null 2>&1; then
    commit=$(git -C "$TOP" rev-parse --short=10 HEAD)
    stamp=$(TZ=UTC git -C "$TOP" log -1 --format=%cd \
            --date=format-local:%Y%m%d%H%M%S)
    [ -z "$(git -C "$TOP" status --porcelain --untracked-files=no)" ] \
        || commit="$commit, with uncommitted changes"
fi
VERSION=0~$stamp.${commit%%,*}
DATE=$(date -R)
# who the packages say made them: your organization's address
MAINTAINER=${VOICE_PKG_MAINTAINER:-Voice bridge maintainers <voice-bridge@example.com>}

rm -rf "$SRC" "$OUT"/*.deb
mkdir -p "$SRC"
cp -r "$TOP/pkg/debian" "$SRC/debian"
cp "$TOP/docs/deploy.md" "$SRC/debian/deploy.md"
# @NAME@ filled in by the project's one renderer
render() { /usr/bin/python3 "$TOP/tools/render.py" "$@"; }
render "$TOP/pkg/debian/control" -o "$SRC/debian/control" \
    MAINTAINER="$MAINTAINER"
render "$TOP/pkg/debian/changelog.in" -o "$SRC/debian/changelog" \
    VERSION="$VERSION" COMMIT="$commit" DATE="$DATE" MAINTAINER="$MAINTAINER"
rm "$SRC/debian/changelog.in"

say "building version $VERSION"
( cd "$SRC" && VOICE_BUILD=$BUILD VOICE_PKG_OUT=$OUT debian/rules binary ) \
    > "$OUT/debhelper.log" 2>&1 \
    || { cat "$OUT/debhelper.log"; say "error: debhelper failed"; exit 1; }

if command -v lintian > /dev/null; then
    # only errors fail; the rest is in lintian.log
    lintian --fail-on error "$OUT"/*.deb > "$OUT/lintian.log" 2>&1 \
        || { cat "$OUT/lintian.log"; say "error: lintian found errors"; exit 1; }
    say "lintian: $(grep -c '^[EW]:' "$OUT/lintian.log" || true) warnings or errors ($OUT/lintian.log)"
fi

for deb in "$OUT"/*.deb; do
    say "$deb"
done

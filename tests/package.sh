#!/usr/bin/env bash
# Builds the Debian package with cargo-deb and checks what it holds and what its scripts do.
# Run by .ci/run after the tests; needs cargo-deb (`cargo install cargo-deb --locked`) and dpkg-deb.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(cargo deb --locked 2>/dev/null | tail -1)
[ -f "$deb" ] || { echo "cargo deb produced no package" >&2; exit 1; }
echo "built $deb"
contents=$(dpkg-deb -c "$deb")
fail=0
expect() {
  if ! grep -qE "$1" <<<"$contents"; then echo "missing from the package: $2" >&2; fail=1; fi
}
expect '^-rwxr-xr-x .* \./usr/bin/phananh$' "the binary, executable"
expect '\./lib/systemd/system/phananh\.service$' "the systemd unit"
expect '\./lib/systemd/system/phananh-purge\.timer$' "the retention timer"
expect '\./lib/systemd/system/phananh-purge\.service$' "the retention service"
expect '^-rw-r----- .* \./etc/phananh/phananh\.toml$' "phananh.toml, not world-readable"
expect '\./etc/phananh/categories\.toml$' "categories.toml"
expect '\./etc/phananh/hue/wards\.toml$' "the Huế wards gazetteer"
expect '\./etc/phananh/channels/imap\.toml\.example$' "the example channel files"
expect '\./usr/share/doc/phananh/OPERATIONS\.md$' "the operations guide"
info=$(dpkg-deb -I "$deb")
grep -q 'Depends:.*adduser' <<<"$info" || { echo "the package must depend on adduser" >&2; fail=1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
dpkg-deb -e "$deb" "$work/control"
grep -q 'adduser --system' "$work/control/postinst" || { echo "postinst does not create the phananh user" >&2; fail=1; }
grep -q '/etc/phananh/conffiles\|phananh.toml' "$work/control/conffiles" || { echo "phananh.toml is not a conffile" >&2; fail=1; }
# The shipped configuration, as installed, passes `phananh check` once a channels folder exists.
dpkg-deb -x "$deb" "$work/root"
sed -e "s#/var/lib/phananh#$work/state#" -e "s#/etc/phananh/channels#$work/root/etc/phananh/channels#" \
  "$work/root/etc/phananh/phananh.toml" > "$work/root/etc/phananh/phananh-test.toml"
"$work/root/usr/bin/phananh" check --config "$work/root/etc/phananh/phananh-test.toml" \
  || { echo "the packaged configuration does not pass phananh check" >&2; fail=1; }
[ "$fail" = 0 ] && echo "package contents: ok"
exit "$fail"

#!/usr/bin/env bash
# Starts a throwaway Dovecot on 127.0.0.1 for the tests: plain IMAP on PORT, IMAPS on TLS_PORT with
# a certificate signed by a freshly generated private CA (DIR/ca.pem), any user name, one
# password. Mail lives in DIR/mail/USER/Maildir. Runs in the foreground (the caller backgrounds
# and kills it); as root it drops to nobody, because Dovecot's login processes refuse root.
# Usage: tests/support/dovecot.sh DIR PORT TLS_PORT PASSWORD
set -euo pipefail
DIR=$1 PORT=$2 TLS_PORT=$3 PASS=$4
mkdir -p "$DIR/run" "$DIR/state" "$DIR/mail"
# A private CA (ca.pem, what a client's ca_file names) and a server certificate it signed: TLS
# libraries refuse a self-signed CA certificate presented as the server's own.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$DIR/ca-key.pem" -out "$DIR/ca.pem" -days 2 \
  -subj "/CN=phananh test CA" >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -keyout "$DIR/key.pem" -out "$DIR/server.csr" -subj "/CN=localhost" >/dev/null 2>&1
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$DIR/server.ext"
openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca-key.pem" -CAcreateserial \
  -out "$DIR/cert.pem" -days 2 -extfile "$DIR/server.ext" >/dev/null 2>&1
if [ "$(id -u)" = 0 ]; then USER_NAME=nobody; GROUP_NAME=nogroup; else USER_NAME=$(id -un); GROUP_NAME=$(id -gn); fi
UID_N=$(id -u "$USER_NAME"); GID_N=$(getent group "$GROUP_NAME" | cut -d: -f3)
cat > "$DIR/dovecot.conf" <<CONF
protocols = imap
listen = 127.0.0.1
base_dir = $DIR/run
state_dir = $DIR/state
instance_name = phananh-test-$PORT
log_path = /dev/stderr
info_log_path = /dev/stderr
default_internal_user = $USER_NAME
default_internal_group = $GROUP_NAME
default_login_user = $USER_NAME
first_valid_uid = $UID_N
first_valid_gid = $GID_N
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2
passdb {
  driver = static
  args = password=$PASS
}
userdb {
  driver = static
  args = uid=$UID_N gid=$GID_N home=$DIR/mail/%n
}
mail_location = maildir:~/Maildir
mail_fsync = never
ssl = yes
ssl_cert = <$DIR/cert.pem
ssl_key = <$DIR/key.pem
ssl_min_protocol = TLSv1.2
service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = $PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $TLS_PORT
    ssl = yes
  }
}
service anvil {
  chroot =
}
service stats {
  chroot =
}
CONF
if [ "$(id -u)" = 0 ]; then
  chown -R nobody:nogroup "$DIR"
  exec setpriv --reuid=nobody --regid=nogroup --init-groups dovecot -F -c "$DIR/dovecot.conf"
fi
exec dovecot -F -c "$DIR/dovecot.conf"

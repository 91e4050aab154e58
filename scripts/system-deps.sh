#!/bin/sh
# Installs the real peers the end-to-end tests talk to: Postfix (with Cyrus SASL), OpenLDAP's
# slapd, swaks and curl; valgrind and strace for the counting benchmark. Postfix and slapd are
# installed unconfigured so that no system instance starts; the tests run their own instances
# on private loopback ports.
set -e
need=""
command -v postconf >/dev/null 2>&1 || need="$need postfix"
command -v saslpasswd2 >/dev/null 2>&1 || need="$need sasl2-bin libsasl2-modules"
command -v swaks >/dev/null 2>&1 || need="$need swaks"
command -v curl >/dev/null 2>&1 || need="$need curl"
[ -x /usr/sbin/slapd ] || need="$need slapd"
command -v ldapadd >/dev/null 2>&1 || need="$need ldap-utils"
command -v smtp-source >/dev/null 2>&1 || need="$need postfix"
# bench/auth_cost.py counts the gateway's instructions and system calls (its test runs it tiny)
command -v valgrind >/dev/null 2>&1 || need="$need valgrind"
command -v strace >/dev/null 2>&1 || need="$need strace"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing system packages:$need (run as root, or install them with apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq $need >/dev/null
# The packages may start system instances; the tests never use them.
(service slapd stop || true) >/dev/null 2>&1
(postfix stop || true) >/dev/null 2>&1

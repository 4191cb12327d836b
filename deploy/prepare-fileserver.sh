#!/bin/sh
# Prepare a Linux host as the xmpp-mft external file server (seed: "Create User",
# "Set up Directory", "User Authentication for the External File Server").
# Idempotent: run it again to add nodes or keys; nothing is duplicated or loosened.
set -eu

PROG=$(basename "$0")
USER_NAME=mftuser
TOP=/opt/mftFileStore
ROOT=
HOME_DIR=
SHELL_PATH=/bin/bash
CREATE_USER=yes
KEYS=
NODES=

usage() {
    cat <<EOF
Usage: $PROG [OPTIONS] [NODE_ID ...]

Run as root on the file server. Creates the transfer user, its ~/.ssh/authorized_keys
(directory 700, file 600), the top directory (700, owned by the user) and one
directory per node below it, and authorizes the nodes' public keys (printed by
'mft keygen -c mft.toml' on each node). Safe to run again.

Options:
  -u, --user NAME       transfer user (default: $USER_NAME)
  -d, --dir PATH        top directory (default: $TOP)
  -k, --key LINE        authorize this public key line (repeatable)
  -K, --key-file FILE   authorize every key line in FILE, '-' for stdin (repeatable)
      --home DIR        the user's home (default: from the passwd database, or /home/NAME)
      --shell PATH      login shell for a new user (default: $SHELL_PATH)
      --no-useradd      never create the user (it must exist, unless --root is given)
      --root DIR        work below DIR instead of / (image building and tests); implies
                        --no-useradd; ownership is set only if the user exists
  -h, --help            show this help

Example:
  $PROG --key "ssh-ed25519 AAAA... mft@node_1" node_1 node_2

Then, on each node, pin the host key: mft keyscan THIS_HOST [-p PORT]
and set [repository] url = "sftp://$USER_NAME@THIS_HOST:22$TOP/node_1".
EOF
}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

need_arg() {
    [ $# -ge 2 ] || die "$1 needs a value (see --help)"
}

NL='
'
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        -u|--user) need_arg "$@"; USER_NAME=$2; shift 2 ;;
        -d|--dir) need_arg "$@"; TOP=$2; shift 2 ;;
        -k|--key) need_arg "$@"; KEYS="$KEYS$2$NL"; shift 2 ;;
        -K|--key-file)
            need_arg "$@"
            if [ "$2" = - ]; then content=$(cat); else content=$(cat -- "$2") || die "cannot read $2"; fi
            KEYS="$KEYS$content$NL"; shift 2 ;;
        --home) need_arg "$@"; HOME_DIR=$2; shift 2 ;;
        --shell) need_arg "$@"; SHELL_PATH=$2; shift 2 ;;
        --no-useradd) CREATE_USER=no; shift ;;
        --root) need_arg "$@"; ROOT=${2%/}; CREATE_USER=no; shift 2 ;;
        --) shift; NODES="$NODES $*"; break ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) NODES="$NODES $1"; shift ;;
    esac
done

case "$USER_NAME" in
    ''|-*|*[!A-Za-z0-9._-]*) die "invalid user name '$USER_NAME'" ;;
esac
case "$TOP" in
    /*) ;;
    *) die "--dir must be an absolute path, got '$TOP'" ;;
esac
for node in $NODES; do
    case "$node" in
        *[!A-Za-z0-9_-]*) die "invalid node id '$node' (letters, digits, dash, underscore)" ;;
    esac
done
if [ -n "$ROOT" ]; then
    [ -d "$ROOT" ] || die "--root $ROOT is not a directory"
elif [ "$(id -u)" != 0 ]; then
    die "run as root (or use --root DIR to prepare a directory tree)"
fi

# Check every key line before changing anything.
printf '%s' "$KEYS" | while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*|[[:space:]]'#'*) continue ;; esac
    # shellcheck disable=SC2086
    set -- $line
    [ $# -ge 2 ] || die "not a public key line: $line"
    case "$1" in
        ssh-*|ecdsa-*|sk-*) ;;
        *) die "not a public key line (key options are not supported): $line" ;;
    esac
    case "$2" in
        AAAA*) ;;
        *) die "not a public key line: $line" ;;
    esac
done

# The user.
if id "$USER_NAME" >/dev/null 2>&1; then
    USER_EXISTS=yes
elif [ "$CREATE_USER" = yes ]; then
    # '*' as password: no password login, but not "locked" (sshd refuses locked
    # accounts when PAM is off); keys are the only way in.
    useradd --create-home --shell "$SHELL_PATH" --password '*' \
        --comment "xmpp-mft file transfer" "$USER_NAME"
    echo "created user $USER_NAME"
    USER_EXISTS=yes
elif [ -n "$ROOT" ]; then
    USER_EXISTS=no
else
    die "user $USER_NAME does not exist (drop --no-useradd to create it)"
fi
if [ -z "$HOME_DIR" ]; then
    if [ "$USER_EXISTS" = yes ]; then
        HOME_DIR=$(getent passwd "$USER_NAME" | cut -d: -f6)
    fi
    HOME_DIR=${HOME_DIR:-/home/$USER_NAME}
fi

owned_dir() { # PATH MODE: create if needed, then set mode and owner
    mkdir -p -- "$1"
    chmod "$2" -- "$1"
    if [ "$USER_EXISTS" = yes ]; then chown "$USER_NAME:" -- "$1"; fi
}

# ~/.ssh/authorized_keys
SSH_DIR="$ROOT$HOME_DIR/.ssh"
AUTH="$SSH_DIR/authorized_keys"
owned_dir "$ROOT$HOME_DIR" go-w
owned_dir "$SSH_DIR" 700
[ -e "$AUTH" ] || : >"$AUTH"
chmod 600 -- "$AUTH"
if [ "$USER_EXISTS" = yes ]; then chown "$USER_NAME:" -- "$AUTH"; fi

printf '%s' "$KEYS" | while IFS= read -r line || [ -n "$line" ]; do
    line=$(printf '%s' "$line" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
    case "$line" in ''|'#'*) continue ;; esac
    # shellcheck disable=SC2086
    set -- $line
    if grep -qF -- " $2" "$AUTH" 2>/dev/null; then
        echo "key already authorized: $1 ...${2#"${2%????????????????}"}"
    else
        printf '%s\n' "$line" >>"$AUTH"
        echo "authorized key: $line"
    fi
done

# The repository: top directory and one directory per node.
owned_dir "$ROOT$TOP" 700
for node in $NODES; do
    owned_dir "$ROOT$TOP/$node" 700
    echo "node directory: $TOP/$node"
done

echo "file server ready: user $USER_NAME, keys in $HOME_DIR/.ssh/authorized_keys, store $TOP"

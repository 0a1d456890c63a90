# /etc/profile.d/koku.sh: point `ku` at the system daemon of packaging/koku.service
# (same paths as its Environment= lines). Login shells read this; so does `sudo -i`.
export KOKU_CONFIG=/etc/koku/config.toml
export KOKU_STATE_DIR=/var/lib/koku

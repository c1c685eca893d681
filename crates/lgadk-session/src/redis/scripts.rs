//! The Lua scripts, each prefixed with the shared helpers of `lua/common.lua`.
//!
//! [`redis::Script`] sends EVALSHA and, when the server answers NOSCRIPT (first use, a restart,
//! a failover, `SCRIPT FLUSH`), loads the script and retries, so scripts survive server restarts.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($name:ident, $file:literal) => {
        pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(include_str!("lua/common.lua"), include_str!(concat!("lua/", $file))))
        });
    };
}

script!(CREATE, "create.lua");
script!(GET, "get.lua");
script!(EXISTS, "exists.lua");
script!(TOUCH, "touch.lua");
script!(TRACK, "track.lua");
script!(METADATA, "metadata.lua");
script!(LIST, "list.lua");
script!(END, "end.lua");
script!(PURGE, "purge.lua");
script!(PURGE_ONE, "purge_one.lua");
script!(SWEEP, "sweep.lua");
script!(CP_VERSION, "cp_version.lua");
script!(CP_PUT, "cp_put.lua");
script!(CP_READ, "cp_read.lua");
script!(CP_MESSAGES, "cp_messages.lua");

/// Status codes scripts return as their first element (see `lua/common.lua`).
pub(crate) mod status {
    pub(crate) const OK: i64 = 1;
    pub(crate) const NOT_FOUND: i64 = 0;
    pub(crate) const EXISTS: i64 = -1;
    pub(crate) const CONFLICT: i64 = -2;
    pub(crate) const CORRUPT: i64 = -3;
    pub(crate) const TOO_LARGE: i64 = -4;
}

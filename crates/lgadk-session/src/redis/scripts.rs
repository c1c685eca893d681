//! The Lua scripts, each prefixed with the shared helpers of `lua/common.lua`.
//!
//! Every script is loaded (one pipelined SCRIPT LOAD each) when a connection is opened, at
//! connect and after every reconnect, so the first call on a fresh or restarted server is one
//! EVALSHA like any later one. On a cluster they are loaded on every master at connect (the
//! cluster client's own reconnects are not seen). [`redis::Script`] still loads a script and retries when the
//! server answers NOSCRIPT without the connection having dropped (`SCRIPT FLUSH`).

use std::sync::LazyLock;

use redis::Script;

macro_rules! scripts {
    ($($name:ident => $file:literal),+ $(,)?) => {
        $(
            pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| Script::new(source::$name));
        )+

        mod source {
            $(
                pub(super) const $name: &str =
                    concat!(include_str!("lua/common.lua"), include_str!(concat!("lua/", $file)));
            )+
        }

        /// The source of every script: all are loaded (SCRIPT LOAD) whenever a connection is
        /// opened, so no call meets NOSCRIPT after a restart or failover.
        pub(crate) const ALL: &[&str] = &[$(source::$name),+];
    };
}

scripts! {
    CREATE => "create.lua",
    GET => "get.lua",
    EXISTS => "exists.lua",
    TOUCH => "touch.lua",
    TRACK => "track.lua",
    METADATA => "metadata.lua",
    LIST => "list.lua",
    END => "end.lua",
    PURGE => "purge.lua",
    PURGE_ONE => "purge_one.lua",
    SWEEP => "sweep.lua",
    CP_VERSION => "cp_version.lua",
    CP_PUT => "cp_put.lua",
    CP_READ => "cp_read.lua",
    CP_MESSAGES => "cp_messages.lua",
}

/// Status codes scripts return as their first element (see `lua/common.lua`).
pub(crate) mod status {
    pub(crate) const OK: i64 = 1;
    pub(crate) const NOT_FOUND: i64 = 0;
    pub(crate) const EXISTS: i64 = -1;
    pub(crate) const CONFLICT: i64 = -2;
    pub(crate) const CORRUPT: i64 = -3;
    pub(crate) const TOO_LARGE: i64 = -4;
}

#[cfg(test)]
mod tests {
    #[test]
    fn scripts_remember_as_many_op_ids_as_the_contract_promises() {
        let line = format!("local OPS_KEPT = {}", lgadk_core::OP_ID_WINDOW);
        assert!(include_str!("lua/common.lua").contains(&line), "common.lua must say `{line}`");
    }
}

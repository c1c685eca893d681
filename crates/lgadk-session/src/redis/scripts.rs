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
    TURN_BEGIN => "turn_begin.lua",
    TURN_COMMIT => "turn_commit.lua",
}

/// Declares the status codes, and lists them by name for the test that compares them with
/// `lua/common.lua`, where each is a Lua local of the same name.
macro_rules! statuses {
    ($($(#[$doc:meta])* $name:ident = $value:literal),+ $(,)?) => {
        $(
            $(#[$doc])*
            pub(crate) const $name: i64 = $value;
        )+

        /// Every status code and its name (the same in Rust and in Lua).
        #[cfg(test)]
        pub(crate) const ALL: &[(&str, i64)] = &[$((stringify!($name), $name)),+];
    };
}

/// Status codes scripts return as their first element. They are defined here; `lua/common.lua`
/// declares each as a Lua local of the same name, and a test checks that both agree.
pub(crate) mod status {
    statuses! {
        /// Done; for `end`, the session was live.
        OK = 1,
        /// The session is missing or expired; for `purge_one`, missing.
        NOT_FOUND = 0,
        /// `create`: a live session has this id.
        EXISTS = -1,
        /// `cp_put`, `turn_commit`: the expected version is not the current one.
        CONFLICT = -2,
        /// A stored field does not decode (the next element names it, except for `purge_one`).
        CORRUPT = -3,
        /// `metadata`, `turn_commit`: the merged metadata would exceed the limit.
        TOO_LARGE = -4,
        /// `end`: the session has another owner than the call expected; nothing changed.
        OTHER_OWNER = 2,
        /// `purge_one`: the session is live; its current deadline follows.
        LIVE = 3,
        /// `purge_one`: the index entry is stale (the session was recreated, or never expires).
        STALE = 4,
    }
}

#[cfg(test)]
mod tests {
    use super::{ALL, status};

    const COMMON: &str = include_str!("lua/common.lua");

    #[test]
    fn scripts_remember_as_many_op_ids_as_the_contract_promises() {
        let line = format!("local OPS_KEPT = {}", lgadk_core::OP_ID_WINDOW);
        assert!(COMMON.contains(&line), "common.lua must say `{line}`");
    }

    /// The status codes `common.lua` declares (`local A, B = 1, -2` lines of known names).
    fn lua_statuses() -> Vec<(String, i64)> {
        let mut found = Vec::new();
        for line in COMMON.lines() {
            let Some((names, values)) = line.strip_prefix("local ").and_then(|rest| rest.split_once(" = ")) else {
                continue;
            };
            let names: Vec<&str> = names.split(',').map(str::trim).collect();
            if !names.iter().any(|name| status::ALL.iter().any(|(known, _)| known == name)) {
                continue;
            }
            let values: Vec<i64> = values.split(',').map(|value| value.trim().parse().unwrap_or(i64::MIN)).collect();
            assert_eq!(names.len(), values.len(), "common.lua: `{line}`");
            found.extend(names.iter().map(|name| (*name).to_owned()).zip(values));
        }
        found
    }

    #[test]
    fn status_codes_are_declared_once_in_common_lua_with_the_rust_values() {
        let lua = lua_statuses();
        for (name, value) in status::ALL {
            let declared: Vec<i64> = lua.iter().filter(|(lua_name, _)| lua_name == name).map(|(_, v)| *v).collect();
            assert_eq!(declared, [*value], "common.lua must declare `{name}` once, as {value}");
        }
        assert_eq!(lua.len(), status::ALL.len(), "common.lua declares statuses Rust does not know: {lua:?}");
    }

    #[test]
    fn scripts_answer_statuses_by_name_never_by_number() {
        for source in ALL {
            let script = &source[COMMON.len()..];
            for (at, _) in script.match_indices("return {") {
                let first = script[at + "return {".len()..].chars().next();
                assert!(
                    first.is_some_and(|c| c.is_ascii_alphabetic()),
                    "a script answers a literal status; name it (see `status`):\n{}",
                    script.lines().next().unwrap_or_default()
                );
            }
        }
    }

    /// The Lua side as Redis runs it: `common.lua` evaluated on a real server, each status
    /// code read by its Rust name.
    #[cfg(feature = "testing")]
    #[test]
    fn status_codes_evaluate_in_lua_to_the_rust_values() {
        let Some(server) = crate::testing::RedisServer::start() else { return };
        let names: Vec<String> = status::ALL.iter().map(|(name, _)| format!("tostring({name})")).collect();
        let script = format!("{COMMON}\nreturn table.concat({{{}}}, ' ')", names.join(", "));
        let answered = server.command(&["EVAL", &script, "0"]);
        let expected: Vec<String> = status::ALL.iter().map(|(_, value)| value.to_string()).collect();
        assert_eq!(answered, Ok(expected.join(" ")), "status codes in Lua, in the order of {:?}", status::ALL);
    }
}

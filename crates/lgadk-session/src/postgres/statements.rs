//! Every statement the store sends, built once per store with its schema name, as shared text.
//!
//! Values are always bound (`$1`, `$2`, …), never formatted in; only the schema name, checked
//! against `[a-z_][a-z0-9_]{0,62}` when the store is built, is part of the text. `LIVE` is the
//! expiry rule of every backend, with the caller's clock as `$2`: a session is live while
//! `now - last_active <= timeout` (or it has no timeout).

use std::sync::Arc;

/// The statements, with the schema in place.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) create: Arc<str>,
    pub(crate) get: Arc<str>,
    pub(crate) exists: Arc<str>,
    pub(crate) track: Arc<str>,
    pub(crate) touch: Arc<str>,
    pub(crate) update_metadata: Arc<str>,
    pub(crate) list_first: Arc<str>,
    pub(crate) list_after: Arc<str>,
    pub(crate) end: Arc<str>,
    pub(crate) purge: Arc<str>,
    pub(crate) version: Arc<str>,
    pub(crate) commit: Arc<str>,
    pub(crate) latest: Arc<str>,
    pub(crate) checkpoint: Arc<str>,
    pub(crate) list_checkpoints: Arc<str>,
    pub(crate) messages: Arc<str>,
    pub(crate) delete_checkpoints: Arc<str>,
    pub(crate) begin_turn: Arc<str>,
}

/// `$2` is the caller's clock (ms); `s` the session row.
const LIVE: &str = "(s.timeout_ms IS NULL OR $2 - s.last_active_ms <= s.timeout_ms)";

/// The session columns `get` and `begin_turn` read, in the order [`super::decode`] expects.
const SESSION_COLUMNS: &str = "s.user_id, s.created_ms, s.last_active_ms, s.timeout_ms, s.metadata::text, \
     s.interactions, s.tokens_in, s.tokens_out, s.response_us, s.agents::text";

/// The checkpoint columns, in the order [`super::decode`] expects.
const CHECKPOINT_COLUMNS: &str = "c.version, c.step, c.node, c.created_ms, c.log_len, c.state::text, c.log_start";

impl Statements {
    pub(crate) fn new(schema: &str) -> Self {
        let text = |sql: &str| -> Arc<str> { sql.replace("{s}", schema).replace("{live}", LIVE).into() };
        // An op id `$n` applied already: `$n <> '' AND $n = ANY(s.ops)`, evaluated on the row
        // being updated (so a concurrent repeat sees the first one's entry).
        let track = "UPDATE {s}.sessions AS s SET \
             interactions = CASE WHEN $6 <> '' AND $6 = ANY (s.ops) THEN s.interactions ELSE {s}.lgadk_add(s.interactions, 1) END, \
             tokens_in = CASE WHEN $6 <> '' AND $6 = ANY (s.ops) THEN s.tokens_in ELSE {s}.lgadk_add(s.tokens_in, $3) END, \
             tokens_out = CASE WHEN $6 <> '' AND $6 = ANY (s.ops) THEN s.tokens_out ELSE {s}.lgadk_add(s.tokens_out, $4) END, \
             response_us = CASE WHEN $6 <> '' AND $6 = ANY (s.ops) THEN s.response_us ELSE {s}.lgadk_add(s.response_us, $5) END, \
             last_active_ms = CASE WHEN $6 <> '' AND $6 = ANY (s.ops) THEN s.last_active_ms ELSE GREATEST(s.last_active_ms, $2) END, \
             agents = CASE WHEN ($6 <> '' AND $6 = ANY (s.ops)) OR $7::jsonb = '[]'::jsonb THEN s.agents \
                 ELSE {s}.lgadk_add_agents(s.agents, $7::jsonb) END, \
             ops = CASE WHEN $6 <> '' AND $6 = ANY (s.ops) THEN s.ops ELSE {s}.lgadk_remember(s.ops, $6) END \
             WHERE s.id = $1 AND {live} \
             RETURNING s.interactions, s.tokens_in, s.tokens_out, s.response_us, s.agents::text";
        Self {
            create: text(
                "SELECT o_status, o_created_ms, o_last_active_ms FROM {s}.lgadk_create($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7)",
            ),
            get: text(&format!("SELECT {SESSION_COLUMNS} FROM {{s}}.sessions s WHERE s.id = $1 AND {{live}}")),
            exists: text("SELECT 1 FROM {s}.sessions s WHERE s.id = $1 AND {live}"),
            track: text(track),
            touch: text(
                "UPDATE {s}.sessions AS s SET last_active_ms = GREATEST(s.last_active_ms, $2) \
                 WHERE s.id = $1 AND {live} RETURNING 1",
            ),
            update_metadata: text(
                "SELECT o_status, o_size, o_metadata FROM {s}.lgadk_update_metadata($1, $2, $3, $4::jsonb, $5::jsonb, $6)",
            ),
            list_first: text(
                "SELECT s.id, s.created_ms FROM {s}.sessions s WHERE s.user_id = $1 AND {live} \
                 ORDER BY s.created_ms DESC, s.id DESC LIMIT $3",
            ),
            list_after: text(
                "SELECT s.id, s.created_ms FROM {s}.sessions s WHERE s.user_id = $1 AND {live} \
                 AND (s.created_ms, s.id) < ($4, $5) ORDER BY s.created_ms DESC, s.id DESC LIMIT $3",
            ),
            end: text("DELETE FROM {s}.sessions AS s WHERE s.id = $1 RETURNING {live}"),
            purge: text(
                "WITH due AS (\
                     SELECT s.id FROM {s}.sessions s WHERE s.filed_deadline_ms < $2 \
                     ORDER BY s.filed_deadline_ms LIMIT $1 FOR UPDATE SKIP LOCKED), \
                 gone AS (\
                     DELETE FROM {s}.sessions AS s USING due WHERE s.id = due.id AND NOT {live} RETURNING 1), \
                 refiled AS (\
                     UPDATE {s}.sessions AS s SET filed_deadline_ms = s.last_active_ms + s.timeout_ms \
                     FROM due WHERE s.id = due.id AND {live} RETURNING 1) \
                 SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM due)",
            ),
            version: text("SELECT s.version FROM {s}.sessions s WHERE s.id = $1 AND {live}"),
            commit: text(
                "SELECT o_status, o_version, o_log_len, o_interactions, o_tokens_in, o_tokens_out, o_response_us, \
                 o_agents, o_metadata, o_size, o_log_start FROM {s}.lgadk_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                 $10, $11, $12, $13, $14, $15::jsonb, $16::jsonb, $17, $18::jsonb, $19)",
            ),
            latest: text(&format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM {{s}}.sessions s \
                 JOIN {{s}}.checkpoints c ON c.session_id = s.id AND c.version = s.version \
                 WHERE s.id = $1 AND {{live}}"
            )),
            checkpoint: text(&format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM {{s}}.sessions s \
                 JOIN {{s}}.checkpoints c ON c.session_id = s.id AND c.version = $3 \
                 WHERE s.id = $1 AND {{live}}"
            )),
            list_checkpoints: text(&format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM {{s}}.sessions s \
                 JOIN {{s}}.checkpoints c ON c.session_id = s.id \
                 WHERE s.id = $1 AND {{live}} ORDER BY c.version DESC LIMIT $3"
            )),
            messages: text(
                "SELECT m.body::text FROM {s}.sessions s JOIN {s}.messages m ON m.session_id = s.id \
                 WHERE s.id = $1 AND {live} AND m.pos >= $3 AND m.pos < $4 ORDER BY m.pos",
            ),
            delete_checkpoints: text(
                "WITH s AS (SELECT s.id, s.version FROM {s}.sessions s WHERE s.id = $1 AND {live} FOR UPDATE), \
                 c AS (DELETE FROM {s}.checkpoints c USING s WHERE c.session_id = s.id RETURNING 1), \
                 m AS (DELETE FROM {s}.messages m USING s WHERE m.session_id = s.id RETURNING 1), \
                 u AS (UPDATE {s}.sessions t SET version = 0, log_len = 0, log_start = 0 FROM s WHERE t.id = s.id \
                 RETURNING 1) \
                 SELECT s.version, (SELECT count(*) FROM c), (SELECT count(*) FROM m), (SELECT count(*) FROM u) FROM s",
            ),
            // One snapshot: the session, its version and, unless the caller's cache ($3) is at
            // that version, the latest checkpoint with the log it covers (from its start: what a
            // cut left, read through the primary key's range).
            begin_turn: text(&format!(
                "SELECT {SESSION_COLUMNS}, s.version, {CHECKPOINT_COLUMNS}, \
                 (SELECT array_agg(m.body::text ORDER BY m.pos) FROM {{s}}.messages m \
                  WHERE m.session_id = s.id AND m.pos >= c.log_start AND m.pos < c.log_len) \
                 FROM {{s}}.sessions s \
                 LEFT JOIN {{s}}.checkpoints c ON c.session_id = s.id AND c.version = s.version \
                 AND s.version IS DISTINCT FROM $3 \
                 WHERE s.id = $1 AND {{live}}"
            )),
        }
    }
}

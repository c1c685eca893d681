//! The schema: embedded, versioned migrations, applied once under an advisory lock.
//!
//! Every migration is SQL text with `{s}` standing for the store's (validated) schema name. They
//! are applied in one transaction that first takes a transaction-scoped advisory lock keyed by
//! the schema name, so processes that start together apply each migration once, and the lock
//! cannot outlive the transaction (no session state: this works through PgBouncer in
//! transaction mode too). The applied versions are recorded in `{s}.lgadk_migrations`.
//! An applied migration is never edited; a change is a new one.

use sqlx::{AssertSqlSafe, PgConnection, Row};

use lgadk_core::{Error, Result};

use super::error::PgFailure;

/// One migration: its version (1, 2, …) and its SQL (several statements).
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) description: &'static str,
    sql: &'static str,
}

/// Every migration, in order.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, description: "sessions, checkpoints, message log", sql: V1 },
    Migration { version: 2, description: "long-term memory items", sql: super::memory::MIGRATION },
    Migration { version: 3, description: "log cuts: where each log and checkpoint starts", sql: V3 },
];

/// Sessions, checkpoints, the log, and the functions of the operations that need more than one
/// statement (each still one round trip: one `SELECT` of the function).
///
/// `sessions.ops` holds the last 16 operation ids applied ([`OP_ID_WINDOW`](lgadk_core::OP_ID_WINDOW)),
/// oldest first: `<32 hex>` for a creation or an interaction, `<32 hex>,<version>,<log_len>` for a
/// checkpoint. `metadata_sizes` maps each metadata key to the size of its `"key":value` in
/// compact JSON as serde_json writes it, so the size of merged metadata is checked in the same
/// statement that merges it. `filed_deadline_ms` is the deadline a session is filed under for
/// purge: set at creation, moved by purge only, so writes do not touch the index.
const V1: &str = r#"
CREATE TABLE {s}.sessions (
    id text COLLATE "C" PRIMARY KEY,
    user_id text COLLATE "C",
    created_ms bigint NOT NULL,
    last_active_ms bigint NOT NULL,
    timeout_ms bigint CHECK (timeout_ms >= 0),
    filed_deadline_ms bigint,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    metadata_sizes jsonb NOT NULL DEFAULT '{}'::jsonb,
    interactions bigint NOT NULL DEFAULT 0,
    tokens_in bigint NOT NULL DEFAULT 0,
    tokens_out bigint NOT NULL DEFAULT 0,
    response_us bigint NOT NULL DEFAULT 0,
    -- Analytics per agent: {agent: [interactions, tokens in, tokens out, µs]}.
    agents jsonb NOT NULL DEFAULT '{}'::jsonb,
    version bigint NOT NULL DEFAULT 0,
    log_len bigint NOT NULL DEFAULT 0,
    ops text[] NOT NULL DEFAULT '{}'
) WITH (fillfactor = 80);

CREATE INDEX sessions_by_user ON {s}.sessions (user_id, created_ms DESC, id DESC) WHERE user_id IS NOT NULL;
CREATE INDEX sessions_by_deadline ON {s}.sessions (filed_deadline_ms) WHERE filed_deadline_ms IS NOT NULL;

CREATE TABLE {s}.checkpoints (
    session_id text COLLATE "C" NOT NULL REFERENCES {s}.sessions (id) ON DELETE CASCADE,
    version bigint NOT NULL,
    step bigint NOT NULL,
    node text,
    created_ms bigint NOT NULL,
    log_len bigint NOT NULL,
    state json NOT NULL,
    PRIMARY KEY (session_id, version)
);

CREATE TABLE {s}.messages (
    session_id text COLLATE "C" NOT NULL REFERENCES {s}.sessions (id) ON DELETE CASCADE,
    pos bigint NOT NULL,
    body json NOT NULL,
    PRIMARY KEY (session_id, pos)
);

-- Size of metadata as compact JSON, from its per-key field sizes: `{` fields joined by `,` `}`.
CREATE FUNCTION {s}.lgadk_metadata_size(sizes jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT (2 + COALESCE(sum(value::bigint), 0) + GREATEST(count(*) - 1, 0))::bigint FROM jsonb_each_text(sizes)
$$;

-- a + b, saturating at i64::MAX (b >= 0), as SessionStats::record adds.
CREATE FUNCTION {s}.lgadk_add(a bigint, b bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN a > 9223372036854775807 - b THEN 9223372036854775807 ELSE a + b END
$$;

-- The last 16 entries of ops after appending `entry` (none appended when it is '').
CREATE FUNCTION {s}.lgadk_remember(ops text[], entry text) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN entry = '' THEN ops ELSE (ops || entry)[GREATEST(1, cardinality(ops) - 14):] END
$$;

-- create: status 1 created, 2 a repeat of the creation with this op id, 0 taken by a live session.
CREATE FUNCTION {s}.lgadk_create(p_id text, p_user text, p_now bigint, p_timeout bigint, p_metadata jsonb,
                                 p_sizes jsonb, p_op text)
RETURNS TABLE (o_status int, o_created_ms bigint, o_last_active_ms bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    SELECT s.ops, s.created_ms, s.last_active_ms, s.timeout_ms INTO r FROM {s}.sessions s WHERE s.id = p_id FOR UPDATE;
    IF FOUND THEN
        IF r.timeout_ms IS NULL OR p_now - r.last_active_ms <= r.timeout_ms THEN
            IF p_op <> '' AND p_op = ANY (r.ops) THEN
                RETURN QUERY SELECT 2, r.created_ms, r.last_active_ms;
            ELSE
                RETURN QUERY SELECT 0, r.created_ms, r.last_active_ms;
            END IF;
            RETURN;
        END IF;
        -- Expired, not yet purged: it gives way, with its checkpoints and log.
        DELETE FROM {s}.sessions s WHERE s.id = p_id;
    END IF;
    INSERT INTO {s}.sessions AS s (id, user_id, created_ms, last_active_ms, timeout_ms, filed_deadline_ms, metadata,
                                   metadata_sizes, ops)
    VALUES (p_id, p_user, p_now, p_now, p_timeout, p_now + p_timeout, p_metadata, p_sizes,
            {s}.lgadk_remember('{}', p_op))
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        -- A concurrent create of the same id got there first.
        RETURN QUERY SELECT 0, 0::bigint, 0::bigint;
        RETURN;
    END IF;
    RETURN QUERY SELECT 1, p_now, p_now;
END
$$;

-- update_metadata: status 1 with the metadata, 0 not found, -4 too large with the size.
CREATE FUNCTION {s}.lgadk_update_metadata(p_id text, p_now bigint, p_merge boolean, p_metadata jsonb, p_sizes jsonb,
                                          p_limit bigint)
RETURNS TABLE (o_status int, o_size bigint, o_metadata text)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    sizes jsonb;
    total bigint;
BEGIN
    SELECT s.metadata_sizes INTO r FROM {s}.sessions s
    WHERE s.id = p_id AND (s.timeout_ms IS NULL OR p_now - s.last_active_ms <= s.timeout_ms) FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 0, 0::bigint, NULL::text;
        RETURN;
    END IF;
    sizes := CASE WHEN p_merge THEN r.metadata_sizes || p_sizes ELSE p_sizes END;
    total := {s}.lgadk_metadata_size(sizes);
    IF total > p_limit THEN
        RETURN QUERY SELECT -4, total, NULL::text;
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE {s}.sessions s
    SET metadata = CASE WHEN p_merge THEN s.metadata || p_metadata ELSE p_metadata END,
        metadata_sizes = sizes,
        last_active_ms = GREATEST(s.last_active_ms, p_now)
    WHERE s.id = p_id
    RETURNING 1, total, s.metadata::text;
END
$$;

-- Adds a turn's breakdown by agent (`[[agent, tokens in, tokens out, µs], ...]`, each agent
-- once) to `current` ({agent: [interactions, tokens in, tokens out, µs]}), saturating.
-- PL/pgSQL, so its plan is cached per connection; callers skip it for an empty breakdown.
CREATE FUNCTION {s}.lgadk_add_agents(current jsonb, shares jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    e jsonb;
    was jsonb;
    result jsonb := current;
BEGIN
    FOR e IN SELECT value FROM jsonb_array_elements(shares) LOOP
        was := COALESCE(result->(e->>0), '[0, 0, 0, 0]'::jsonb);
        result := result || jsonb_build_object(e->>0, jsonb_build_array(
            {s}.lgadk_add((was->>0)::bigint, 1),
            {s}.lgadk_add((was->>1)::bigint, (e->>1)::bigint),
            {s}.lgadk_add((was->>2)::bigint, (e->>2)::bigint),
            {s}.lgadk_add((was->>3)::bigint, (e->>3)::bigint)));
    END LOOP;
    RETURN result;
END
$$;

-- Checkpoint put and turn commit: the checkpoint compare-and-set with its messages and
-- retention, then (optionally) the interaction and the metadata merge, all checked first.
-- Status 1 saved (version, log length, totals, metadata), 0 not found, -2 conflict (o_version
-- is the version found), -4 merged metadata too large (o_size).
CREATE FUNCTION {s}.lgadk_commit(p_id text, p_now bigint, p_expected bigint, p_retention bigint, p_step bigint,
                                 p_node text, p_state text, p_cp_op text, p_messages text[], p_track boolean,
                                 p_tokens_in bigint, p_tokens_out bigint, p_response_us bigint, p_track_op text,
                                 p_merge jsonb, p_merge_sizes jsonb, p_limit bigint, p_agents jsonb)
RETURNS TABLE (o_status int, o_version bigint, o_log_len bigint, o_interactions bigint, o_tokens_in bigint,
               o_tokens_out bigint, o_response_us bigint, o_metadata text, o_size bigint, o_agents text)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    done text;
    sizes jsonb;
    total bigint := 0;
    v bigint;
    len bigint;
    new_ops text[];
    counted boolean;
BEGIN
    SELECT s.version, s.log_len, s.ops, s.metadata_sizes, s.interactions, s.tokens_in, s.tokens_out, s.response_us,
           s.metadata, s.agents
    INTO r FROM {s}.sessions s
    WHERE s.id = p_id AND (s.timeout_ms IS NULL OR p_now - s.last_active_ms <= s.timeout_ms) FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 0, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, NULL::text, 0::bigint,
            NULL::text;
        RETURN;
    END IF;
    -- A repeat of an applied commit writes nothing and answers with what it saved.
    IF p_cp_op <> '' THEN
        SELECT e INTO done FROM unnest(r.ops) AS e WHERE e LIKE p_cp_op || ',%' LIMIT 1;
        IF done IS NOT NULL THEN
            RETURN QUERY SELECT 1, split_part(done, ',', 2)::bigint, split_part(done, ',', 3)::bigint, r.interactions,
                r.tokens_in, r.tokens_out, r.response_us, r.metadata::text, 0::bigint, r.agents::text;
            RETURN;
        END IF;
    END IF;
    IF r.version <> p_expected THEN
        RETURN QUERY SELECT -2, r.version, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, NULL::text, 0::bigint,
            NULL::text;
        RETURN;
    END IF;
    IF p_merge IS NOT NULL THEN
        sizes := r.metadata_sizes || p_merge_sizes;
        total := {s}.lgadk_metadata_size(sizes);
        IF total > p_limit THEN
            RETURN QUERY SELECT -4, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, NULL::text, total,
                NULL::text;
            RETURN;
        END IF;
    END IF;
    -- Every check passed: from here on nothing fails.
    v := r.version + 1;
    len := r.log_len + COALESCE(cardinality(p_messages), 0);
    IF len > r.log_len THEN
        INSERT INTO {s}.messages (session_id, pos, body)
        SELECT p_id, r.log_len + m.ord - 1, m.body::json FROM unnest(p_messages) WITH ORDINALITY AS m (body, ord);
    END IF;
    INSERT INTO {s}.checkpoints (session_id, version, step, node, created_ms, log_len, state)
    VALUES (p_id, v, p_step, p_node, p_now, len, p_state::json);
    DELETE FROM {s}.checkpoints c WHERE c.session_id = p_id AND c.version <= v - p_retention;
    new_ops := r.ops;
    IF p_cp_op <> '' THEN
        new_ops := {s}.lgadk_remember(new_ops, p_cp_op || ',' || v || ',' || len);
    END IF;
    counted := p_track AND NOT (p_track_op <> '' AND p_track_op = ANY (new_ops));
    IF counted THEN
        new_ops := {s}.lgadk_remember(new_ops, p_track_op);
    END IF;
    RETURN QUERY
    UPDATE {s}.sessions s
    SET version = v,
        log_len = len,
        ops = new_ops,
        interactions = CASE WHEN counted THEN {s}.lgadk_add(s.interactions, 1) ELSE s.interactions END,
        tokens_in = CASE WHEN counted THEN {s}.lgadk_add(s.tokens_in, p_tokens_in) ELSE s.tokens_in END,
        tokens_out = CASE WHEN counted THEN {s}.lgadk_add(s.tokens_out, p_tokens_out) ELSE s.tokens_out END,
        response_us = CASE WHEN counted THEN {s}.lgadk_add(s.response_us, p_response_us) ELSE s.response_us END,
        agents = CASE WHEN counted AND p_agents <> '[]'::jsonb THEN {s}.lgadk_add_agents(s.agents, p_agents)
                      ELSE s.agents END,
        metadata = CASE WHEN p_merge IS NULL THEN s.metadata ELSE s.metadata || p_merge END,
        metadata_sizes = CASE WHEN p_merge IS NULL THEN s.metadata_sizes ELSE sizes END,
        last_active_ms = CASE WHEN p_track OR p_merge IS NOT NULL THEN GREATEST(s.last_active_ms, p_now)
                              ELSE s.last_active_ms END
    WHERE s.id = p_id
    RETURNING 1, v, len, s.interactions, s.tokens_in, s.tokens_out, s.response_us,
              CASE WHEN p_merge IS NULL THEN NULL ELSE s.metadata::text END, total, s.agents::text;
END
$$;
"#;

/// Log cuts (`LogRetention`): `sessions.log_start` is the log's first position (the messages
/// below it are deleted by the commit that moved it), `checkpoints.log_start` where the log
/// started when each was saved; `lgadk_commit` takes the cut and answers the start.
const V3: &str = r#"
ALTER TABLE {s}.sessions ADD COLUMN log_start bigint NOT NULL DEFAULT 0;
ALTER TABLE {s}.checkpoints ADD COLUMN log_start bigint NOT NULL DEFAULT 0;

DROP FUNCTION {s}.lgadk_commit(text, bigint, bigint, bigint, bigint, text, text, text, text[], boolean, bigint, bigint,
                               bigint, text, jsonb, jsonb, bigint, jsonb);

-- Checkpoint put and turn commit, as in V1 plus the log's cut: the messages go at
-- GREATEST(log_len, p_log_start) and the positions below GREATEST(log_start, p_log_start) are
-- deleted, in the same call. Answers the log's start last (o_log_start); an op id's entry
-- records it fourth (`<op>,<version>,<log_len>,<log_start>`; V1 entries have three fields).
CREATE FUNCTION {s}.lgadk_commit(p_id text, p_now bigint, p_expected bigint, p_retention bigint, p_step bigint,
                                 p_node text, p_state text, p_cp_op text, p_messages text[], p_track boolean,
                                 p_tokens_in bigint, p_tokens_out bigint, p_response_us bigint, p_track_op text,
                                 p_merge jsonb, p_merge_sizes jsonb, p_limit bigint, p_agents jsonb,
                                 p_log_start bigint)
RETURNS TABLE (o_status int, o_version bigint, o_log_len bigint, o_interactions bigint, o_tokens_in bigint,
               o_tokens_out bigint, o_response_us bigint, o_metadata text, o_size bigint, o_agents text,
               o_log_start bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    done text;
    sizes jsonb;
    total bigint := 0;
    v bigint;
    len bigint;
    at bigint;
    new_start bigint;
    new_ops text[];
    counted boolean;
BEGIN
    SELECT s.version, s.log_len, s.log_start, s.ops, s.metadata_sizes, s.interactions, s.tokens_in, s.tokens_out, s.response_us,
           s.metadata, s.agents
    INTO r FROM {s}.sessions s
    WHERE s.id = p_id AND (s.timeout_ms IS NULL OR p_now - s.last_active_ms <= s.timeout_ms) FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 0, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, NULL::text, 0::bigint,
            NULL::text, 0::bigint;
        RETURN;
    END IF;
    -- A repeat of an applied commit writes nothing and answers with what it saved.
    IF p_cp_op <> '' THEN
        SELECT e INTO done FROM unnest(r.ops) AS e WHERE e LIKE p_cp_op || ',%' LIMIT 1;
        IF done IS NOT NULL THEN
            RETURN QUERY SELECT 1, split_part(done, ',', 2)::bigint, split_part(done, ',', 3)::bigint, r.interactions,
                r.tokens_in, r.tokens_out, r.response_us, r.metadata::text, 0::bigint, r.agents::text,
                COALESCE(NULLIF(split_part(done, ',', 4), ''), '0')::bigint;
            RETURN;
        END IF;
    END IF;
    IF r.version <> p_expected THEN
        RETURN QUERY SELECT -2, r.version, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, NULL::text, 0::bigint,
            NULL::text, 0::bigint;
        RETURN;
    END IF;
    IF p_merge IS NOT NULL THEN
        sizes := r.metadata_sizes || p_merge_sizes;
        total := {s}.lgadk_metadata_size(sizes);
        IF total > p_limit THEN
            RETURN QUERY SELECT -4, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, NULL::text, total,
                NULL::text, 0::bigint;
            RETURN;
        END IF;
    END IF;
    -- Every check passed: from here on nothing fails.
    v := r.version + 1;
    new_start := GREATEST(r.log_start, p_log_start);
    at := GREATEST(r.log_len, p_log_start);
    len := at + COALESCE(cardinality(p_messages), 0);
    IF new_start > r.log_start THEN
        DELETE FROM {s}.messages m WHERE m.session_id = p_id AND m.pos < new_start;
    END IF;
    IF len > at THEN
        INSERT INTO {s}.messages (session_id, pos, body)
        SELECT p_id, at + m.ord - 1, m.body::json FROM unnest(p_messages) WITH ORDINALITY AS m (body, ord);
    END IF;
    INSERT INTO {s}.checkpoints (session_id, version, step, node, created_ms, log_len, state, log_start)
    VALUES (p_id, v, p_step, p_node, p_now, len, p_state::json, new_start);
    DELETE FROM {s}.checkpoints c WHERE c.session_id = p_id AND c.version <= v - p_retention;
    new_ops := r.ops;
    IF p_cp_op <> '' THEN
        new_ops := {s}.lgadk_remember(new_ops, p_cp_op || ',' || v || ',' || len || ',' || new_start);
    END IF;
    counted := p_track AND NOT (p_track_op <> '' AND p_track_op = ANY (new_ops));
    IF counted THEN
        new_ops := {s}.lgadk_remember(new_ops, p_track_op);
    END IF;
    RETURN QUERY
    UPDATE {s}.sessions s
    SET version = v,
        log_len = len,
        log_start = new_start,
        ops = new_ops,
        interactions = CASE WHEN counted THEN {s}.lgadk_add(s.interactions, 1) ELSE s.interactions END,
        tokens_in = CASE WHEN counted THEN {s}.lgadk_add(s.tokens_in, p_tokens_in) ELSE s.tokens_in END,
        tokens_out = CASE WHEN counted THEN {s}.lgadk_add(s.tokens_out, p_tokens_out) ELSE s.tokens_out END,
        response_us = CASE WHEN counted THEN {s}.lgadk_add(s.response_us, p_response_us) ELSE s.response_us END,
        agents = CASE WHEN counted AND p_agents <> '[]'::jsonb THEN {s}.lgadk_add_agents(s.agents, p_agents)
                      ELSE s.agents END,
        metadata = CASE WHEN p_merge IS NULL THEN s.metadata ELSE s.metadata || p_merge END,
        metadata_sizes = CASE WHEN p_merge IS NULL THEN s.metadata_sizes ELSE sizes END,
        last_active_ms = CASE WHEN p_track OR p_merge IS NOT NULL THEN GREATEST(s.last_active_ms, p_now)
                              ELSE s.last_active_ms END
    WHERE s.id = p_id
    RETURNING 1, v, len, s.interactions, s.tokens_in, s.tokens_out, s.response_us,
              CASE WHEN p_merge IS NULL THEN NULL ELSE s.metadata::text END, total, s.agents::text, new_start;
END
$$;
"#;

/// Checks, without changing anything, that the schema has exactly the migrations this version
/// knows (for stores built with migrations off).
pub(crate) async fn check(conn: &mut PgConnection, schema: &str) -> Result<()> {
    let failed = |source: sqlx::Error| Error::backend("postgres", "connect", PgFailure::Statement(source));
    let found: i64 =
        sqlx::raw_sql(AssertSqlSafe(format!("SELECT COALESCE(max(version), 0) FROM {schema}.lgadk_migrations")))
            .fetch_one(&mut *conn)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(failed)?;
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if found != known {
        let failure = PgFailure::SchemaMismatch { schema: schema.to_owned(), found, known };
        return Err(Error::backend("postgres", "connect", failure));
    }
    Ok(())
}

/// Applies the migrations this version knows and the schema lacks, in one transaction under
/// an advisory lock (see the module docs). `conn` must not be in a transaction.
pub(crate) async fn migrate(conn: &mut PgConnection, schema: &str) -> Result<()> {
    let failed = |source: sqlx::Error| Error::backend("postgres", "migrate", PgFailure::Statement(source));
    let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(failed)?;
    // Simple queries only, nothing prepared: this runs through poolers in transaction mode
    // too. The schema name is checked (`[a-z_][a-z0-9_]*`), so it is written in as is.
    // The schema is created only when missing: `CREATE SCHEMA IF NOT EXISTS` checks the
    // database's CREATE privilege even when the schema exists, which an application role that
    // owns only its schema lacks.
    let setup = format!(
        "SELECT pg_advisory_xact_lock(hashtextextended('lgadk.migrate.{schema}', 0)); \
         DO $lgadk$ BEGIN \
         IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '{schema}') THEN CREATE SCHEMA {schema}; END IF; \
         END $lgadk$; \
         CREATE TABLE IF NOT EXISTS {schema}.lgadk_migrations \
         (version bigint PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    );
    sqlx::raw_sql(AssertSqlSafe(setup)).execute(&mut *tx).await.map_err(failed)?;
    let found: i64 =
        sqlx::raw_sql(AssertSqlSafe(format!("SELECT COALESCE(max(version), 0) FROM {schema}.lgadk_migrations")))
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(failed)?;
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if found > known {
        return Err(Error::backend(
            "postgres",
            "migrate",
            PgFailure::SchemaTooNew { schema: schema.to_owned(), found, known },
        ));
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        let sql = migration.sql.replace("{s}", schema);
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *tx).await.map_err(failed)?;
        // The description is a constant of this file, without quotes.
        let record = format!(
            "INSERT INTO {schema}.lgadk_migrations (version, description) VALUES ({}, '{}')",
            migration.version, migration.description
        );
        sqlx::raw_sql(AssertSqlSafe(record)).execute(&mut *tx).await.map_err(failed)?;
        tracing::info!(schema, version = migration.version, "applied lgadk migration");
    }
    tx.commit().await.map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_quote_free() {
        for (n, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, n as i64 + 1);
            assert!(!migration.description.contains('\''), "written into SQL as a literal");
            assert!(migration.sql.contains("{s}."), "schema-qualified");
        }
    }
}

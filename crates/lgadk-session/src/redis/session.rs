//! [`SessionStore`] on Redis: one script per operation, plus the index work around them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use lgadk_core::session::{check_metadata_depth, check_metadata_size, timestamp};
use lgadk_core::{
    Cursor, DEFAULT_SESSION_TIMEOUT, Error, Interaction, Metadata, MetadataUpdate, NewSession, Page, Result, Session,
    SessionId, SessionPage, SessionStats, SessionStore, UserId,
};

use super::conn::Effect;
use super::error::RedisFailure;
use super::replies::{CreateReply, EndReply, ExistsReply, GetReply, MetadataReply, TouchReply, TrackReply};
use super::scripts;
use super::{GC_GRACE_MS, MAX_TIMEOUT_MS, PURGE_BATCH, RedisStore, SWEEP_EVERY, clamp_i64, keys, op_arg, writes};

#[async_trait]
impl SessionStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn create(&self, new: NewSession) -> Result<Session> {
        let mut new = new;
        new.metadata = check_metadata_depth(std::mem::take(&mut new.metadata))?;
        check_metadata_size(&new.metadata, self.inner.metadata_limit)?;
        let now = self.now();
        let id = new.id.unwrap_or_default();
        let timeout_ms = match new.timeout.resolve(Some(DEFAULT_SESSION_TIMEOUT)) {
            Some(timeout) => clamp_i64(timeout.as_millis().min(u128::from(MAX_TIMEOUT_MS))),
            None => -1,
        };
        let member = keys::member(now, &id);
        let user = new.user_id.as_ref().map(UserId::as_str);
        let session_keys = self.keys().session(&id);
        let cluster = self.is_cluster();
        let user_key = new.user_id.as_ref().map(|user| self.keys().user(user));
        let expiry_entry = keys::expiry_entry(&member, user);

        let mut invocation = scripts::CREATE.prepare_invoke();
        for key in session_keys.all() {
            invocation.key(key);
        }
        if !cluster {
            invocation.key(user_key.as_deref().unwrap_or(self.keys().expiry())).key(self.keys().expiry());
        }
        invocation.arg(now).arg(GC_GRACE_MS).arg(&member).arg(user.unwrap_or("")).arg(timeout_ms).arg(self.prefix());
        invocation.arg(op_arg(new.op));
        for (key, value) in &new.metadata {
            invocation.arg(key).arg(Self::json("create", "metadata", value)?);
        }

        if cluster {
            // Index first: a failure after this leaves entries that listing and purge repair,
            // never a live session missing from its indexes.
            self.index_new(user_key.as_deref(), &member, (timeout_ms >= 0).then(|| now + timeout_ms), &expiry_entry)
                .await?;
        }
        let created = match self.run("create", writes(new.op), &invocation, &id).await? {
            CreateReply::Repeated { member: first, created_at, last_active } => {
                // The same creation, repeated (same op id): the session it created.
                if cluster && first != member {
                    // Best effort: the entries this repeat added point at nothing.
                    self.unindex(user_key.as_deref(), &member, &expiry_entry).await.ok();
                }
                return Ok(Session {
                    id,
                    user_id: new.user_id,
                    created_at: timestamp(created_at),
                    last_active: timestamp(last_active),
                    timeout: u64::try_from(timeout_ms).ok().map(Duration::from_millis),
                    metadata: new.metadata,
                    stats: SessionStats::default(),
                });
            }
            CreateReply::Exists { user: owner, member: existing } => {
                let same_entries = existing == member && owner == user.unwrap_or("");
                if cluster && !same_entries {
                    // Our entries point at a session that is not ours; drop them now rather
                    // than leave them to listing and purge (best effort).
                    self.unindex(user_key.as_deref(), &member, &expiry_entry).await.ok();
                }
                return Err(Error::AlreadyExists(id));
            }
            CreateReply::Created { old_user, old_member } => (old_user, old_member),
        };
        // The script replaced an expired session with this id: clean its entries. On a single
        // Redis the script did, except for another owner's user index, which it could not name.
        if let (old_user, Some(old_member)) = created
            && old_member != member
        {
            let old_owner = old_user.as_deref();
            let old_key = old_owner.map(|user| self.keys().user_raw(user));
            if cluster {
                self.unindex(old_key.as_deref(), &old_member, &keys::expiry_entry(&old_member, old_owner)).await.ok();
            } else if let Some(old_key) = old_key.filter(|_| old_owner != user) {
                // Best effort: the entry is stale already, and listing drops stale entries.
                self.caller()
                    .command::<()>("create", Effect::Repeatable, redis::cmd("ZREM").arg(old_key).arg(&old_member))
                    .await
                    .ok();
            }
        }
        if self.inner.creates.fetch_add(1, Ordering::Relaxed).is_multiple_of(SWEEP_EVERY)
            && let Err(err) = self.sweep(new.user_id.as_ref(), &member).await
        {
            // The session is created; the next sweep, listing or purge does this work.
            tracing::debug!(error = %err, "index sweep after create failed");
        }
        Ok(Session {
            id,
            user_id: new.user_id,
            created_at: timestamp(now),
            last_active: timestamp(now),
            timeout: u64::try_from(timeout_ms).ok().map(Duration::from_millis),
            metadata: new.metadata,
            stats: SessionStats::default(),
        })
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        let keys = self.keys().session(id);
        let mut invocation = scripts::GET.prepare_invoke();
        invocation.key(&keys.record).key(&keys.metadata).arg(self.now());
        Ok(self.run::<GetReply>("get", Effect::Read, &invocation, id).await?.session)
    }

    async fn exists(&self, id: &SessionId) -> Result<bool> {
        let keys = self.keys().session(id);
        let mut invocation = scripts::EXISTS.prepare_invoke();
        invocation.key(&keys.record).arg(self.now());
        Ok(self.run::<ExistsReply>("exists", Effect::Read, &invocation, id).await?.live)
    }

    async fn track_interaction(&self, id: &SessionId, turn: Interaction) -> Result<SessionStats> {
        let tokens_in = clamp_i64(turn.tokens_in.into());
        let tokens_out = clamp_i64(turn.tokens_out.into());
        let response_us = clamp_i64(turn.response_time.as_micros());
        let agents = agent_shares(&turn.agents);
        let reply: TrackReply = self
            .session_script(
                "track_interaction",
                writes(turn.op),
                &scripts::TRACK,
                id,
                &[&GC_GRACE_MS, &tokens_in, &tokens_out, &response_us, &op_arg(turn.op), &agents],
            )
            .await?;
        Ok(reply.stats)
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        self.session_script::<TouchReply>("touch", Effect::Repeatable, &scripts::TOUCH, id, &[&GC_GRACE_MS]).await?;
        Ok(())
    }

    async fn update_metadata(&self, id: &SessionId, update: MetadataUpdate) -> Result<Metadata> {
        let limit = self.inner.metadata_limit;
        let update = update.check_depth()?;
        // The result is never smaller than the update itself, so this saves a round trip.
        check_metadata_size(update.map(), limit)?;
        let (mode, map) = match &update {
            MetadataUpdate::Merge(map) => ("merge", map),
            MetadataUpdate::Replace(map) => ("replace", map),
            _ => return Err(Error::InvalidConfig { reason: "unsupported metadata update".into() }),
        };
        let keys = self.keys().session(id);
        let mut invocation = scripts::METADATA.prepare_invoke();
        for key in keys.all() {
            invocation.key(key);
        }
        invocation.arg(self.now()).arg(GC_GRACE_MS).arg(limit).arg(mode);
        for (key, value) in map {
            invocation.arg(key).arg(Self::json("update_metadata", "metadata", value)?);
        }
        match self.run("update_metadata", Effect::Write, &invocation, id).await? {
            MetadataReply::Updated(metadata) => Ok(metadata),
            MetadataReply::TooLarge { size } => Err(Error::MetadataTooLarge { size, limit }),
        }
    }

    async fn list_user_sessions(&self, user: &UserId, page: Page) -> Result<SessionPage> {
        let limit = page.effective_limit();
        let bound = page.cursor.as_ref().map_or_else(|| "+".to_owned(), keys::bound_after);
        let (members, more) = self.list_entries(user, limit, bound).await?;
        let mut ids = Vec::with_capacity(members.len());
        let mut last = None;
        for member in &members {
            let (created_ms, id) = keys::parse_member(member).ok_or_else(|| {
                Error::backend(
                    "redis",
                    "list_user_sessions",
                    RedisFailure::BadReply { script: "list_user_sessions", detail: "malformed index member" },
                )
            })?;
            ids.push(id.clone());
            last = Some(Cursor::new(created_ms, id));
        }
        Ok(SessionPage { ids, next: if more { last } else { None } })
    }

    async fn end(&self, id: &SessionId) -> Result<bool> {
        let keys = self.keys().session(id);
        let cluster = self.is_cluster();
        // On a single Redis the script removes the index entries too, but it may only touch the
        // owner's user index if it receives it in KEYS: the first call assumes no owner and
        // answers with the owner when there is one, the second names that owner's index. Only
        // a session recreated for another owner in between needs a third, unchecked, call.
        let mut owner: Option<String> = None;
        for attempt in 0..3 {
            let unchecked = cluster || attempt == 2;
            let mut invocation = scripts::END.prepare_invoke();
            for key in keys.all() {
                invocation.key(key);
            }
            if !cluster {
                invocation.key(self.keys().expiry());
                if let Some(owner) = owner.as_deref().filter(|_| !unchecked) {
                    invocation.key(self.keys().user_raw(owner));
                }
            }
            let expected = if unchecked { "*" } else { owner.as_deref().unwrap_or("") };
            invocation.arg(self.now()).arg(expected);
            let (was_live, user, member) = match self.run("end", Effect::Write, &invocation, id).await? {
                EndReply::OtherOwner { owner: actual } => {
                    owner = actual;
                    continue;
                }
                EndReply::Ended { was_live, user, member } => (was_live, user, member),
            };
            if let Some(member) = member.filter(|_| unchecked) {
                // Best effort: an entry left behind is removed by the next listing or purge.
                let user = user.as_deref();
                let user_key = user.map(|user| self.keys().user_raw(user));
                let expiry_entry = keys::expiry_entry(&member, user);
                if cluster {
                    self.unindex(user_key.as_deref(), &member, &expiry_entry).await.ok();
                } else if let Some(user_key) = user_key {
                    self.caller()
                        .command::<()>("end", Effect::Repeatable, redis::cmd("ZREM").arg(user_key).arg(&member))
                        .await
                        .ok();
                }
            }
            return Ok(was_live);
        }
        Err(Error::backend("redis", "end", RedisFailure::BadReply { script: "end", detail: "no final answer" }))
    }

    async fn purge_expired(&self) -> Result<usize> {
        let mut removed = 0;
        loop {
            let (gone, seen) =
                if self.is_cluster() { self.purge_batch_cluster().await? } else { self.purge_batch_single().await? };
            removed += gone;
            if seen < PURGE_BATCH {
                return Ok(removed);
            }
        }
    }
}

/// A turn's breakdown by agent as `add_agents` in `lua/common.lua` takes it: JSON
/// `[[agent, tokens in, tokens out, µs], ...]`, or `''` for none.
pub(super) fn agent_shares(agents: &[lgadk_core::AgentShare]) -> String {
    if agents.is_empty() {
        return String::new();
    }
    let rows: Vec<(&str, u64, u64, u64)> = agents
        .iter()
        .map(|a| (a.agent.as_str(), a.tokens_in, a.tokens_out, u64::try_from(a.time.as_micros()).unwrap_or(u64::MAX)))
        .collect();
    serde_json::to_string(&rows).unwrap_or_default()
}

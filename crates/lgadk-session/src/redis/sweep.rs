//! Index sweeps paced by creates (see "Index growth without a reaper" in the module docs).

use lgadk_core::{Error, Result, SessionId, UserId};

use super::cluster::EntryState;
use super::conn::Effect;
use super::replies::SweepReply;
use super::scripts;
use super::{GC_GRACE_MS, REPAIR_GRACE_MS, RedisStore, SWEEP_BATCH, keys};

/// Index sweeps: bounded work, paced by creates, that drops index entries pointing at nothing
/// when no reaper runs (see the module docs).
impl RedisStore {
    /// Checks the oldest [`SWEEP_BATCH`] entries of `user`'s index (other than `created`, the
    /// entry just written) and as many expiry-index entries overdue by more than the garbage
    /// collection grace: entries of sessions Redis already dropped go, sessions extended
    /// meanwhile are re-filed, and expired sessions are left for purge to delete and count.
    pub(super) async fn sweep(&self, user: Option<&UserId>, created: &str) -> Result<()> {
        const OP: &str = "create";
        let now = self.now();
        let expiry = self.keys().expiry();
        let user_key = user.map(|user| self.keys().user(user));
        let user_read = async {
            match &user_key {
                Some(key) => {
                    let cmd = redis::cmd("ZRANGEBYLEX")
                        .arg(key)
                        .arg("-")
                        .arg("+")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(SWEEP_BATCH)
                        .clone();
                    self.caller().command::<Vec<String>>(OP, Effect::Read, &cmd).await
                }
                None => Ok(Vec::new()),
            }
        };
        let overdue_cmd = redis::cmd("ZRANGEBYSCORE")
            .arg(expiry)
            .arg("-inf")
            .arg(format!("({}", now.saturating_sub(GC_GRACE_MS)))
            .arg("LIMIT")
            .arg(0)
            .arg(SWEEP_BATCH)
            .clone();
        let (user_entries, overdue) =
            tokio::join!(user_read, self.caller().command::<Vec<String>>(OP, Effect::Read, &overdue_cmd));
        let user_entries: Vec<(String, SessionId)> = user_entries?
            .into_iter()
            .filter(|entry| entry != created)
            .filter_map(|entry| keys::parse_member(&entry).map(|(_, id)| (entry, id)))
            .collect();
        let overdue: Vec<(String, SessionId, Option<String>)> = overdue?
            .into_iter()
            .filter_map(|entry| {
                let (member, owner) = keys::parse_expiry_entry(&entry)?;
                let (_, id) = keys::parse_member(member)?;
                let owner = owner.map(str::to_owned);
                Some((entry, id, owner))
            })
            .collect();
        if user_entries.is_empty() && overdue.is_empty() {
            return Ok(());
        }
        if self.is_cluster() {
            return self.sweep_cluster(user, user_entries, overdue, now).await;
        }
        let mut invocation = scripts::SWEEP.prepare_invoke();
        invocation.key(expiry).key(user_key.as_deref().unwrap_or(expiry));
        for (_, id) in &user_entries {
            invocation.key(self.keys().session(id).record);
        }
        for (_, id, owner) in &overdue {
            invocation.key(self.keys().session(id).record);
            invocation.key(owner.as_deref().map_or_else(|| expiry.to_owned(), |owner| self.keys().user_raw(owner)));
        }
        invocation.arg(now).arg(user.map_or("", UserId::as_str)).arg(user_entries.len());
        for (entry, _) in &user_entries {
            invocation.arg(entry);
        }
        for (entry, _, _) in &overdue {
            invocation.arg(entry);
        }
        let SweepReply { dropped_user, dropped_expiry } = self.run(OP, Effect::Repeatable, &invocation, &()).await?;
        tracing::debug!(dropped_user, dropped_expiry, "index sweep");
        Ok(())
    }

    /// The same sweep on a cluster: one call per session, then the index updates.
    pub(super) async fn sweep_cluster(
        &self,
        user: Option<&UserId>,
        user_entries: Vec<(String, SessionId)>,
        overdue: Vec<(String, SessionId, Option<String>)>,
        now: i64,
    ) -> Result<()> {
        const OP: &str = "create";
        if let Some(user) = user {
            let owner = user.as_str().to_owned();
            let entries: Vec<String> = user_entries.into_iter().map(|(entry, _)| entry).collect();
            let states = self
                .each(OP, entries.clone(), move |store, entry| {
                    let owner = owner.clone();
                    async move { store.judge_entry(&entry, &owner, now).await }
                })
                .await?;
            let dangling: Vec<&String> = entries
                .iter()
                .zip(states)
                .filter_map(|(entry, state)| matches!(state, Ok(EntryState::Dangling)).then_some(entry))
                .collect();
            if !dangling.is_empty() {
                self.caller()
                    .command::<()>(
                        OP,
                        Effect::Repeatable,
                        redis::cmd("ZREM").arg(self.keys().user(user)).arg(&dangling),
                    )
                    .await?;
            }
        }
        let fields = self
            .each(OP, overdue.iter().map(|(_, id, _)| id.clone()).collect(), |store, id| async move {
                let cmd = redis::cmd("HMGET").arg(store.keys().session(&id).record).arg(&["ix", "l", "t"]).clone();
                store.caller().command::<Vec<Option<String>>>(OP, Effect::Read, &cmd).await
            })
            .await?;
        let expiry = self.keys().expiry();
        for ((entry, _, owner), fields) in overdue.iter().zip(fields) {
            let Some((member, _)) = keys::parse_expiry_entry(entry) else { continue };
            let (ix, last, timeout) = match fields?.as_slice() {
                [ix, last, timeout] => (ix.clone(), last.clone(), timeout.clone()),
                _ => return Err(Error::backend("redis", OP, "HMGET answered with the wrong arity")),
            };
            let created_ms = keys::parse_member(member).map_or(0, |(created, _)| created);
            let last = last.and_then(|last| last.parse::<i64>().ok());
            let timeout = timeout.and_then(|timeout| timeout.parse::<i64>().ok());
            // As `lua/sweep.lua` decides, plus the cluster's grace for a create in flight.
            let refile = match (ix.as_deref() == Some(member), last, timeout) {
                _ if ix.is_none() && now.saturating_sub(created_ms) < REPAIR_GRACE_MS => continue,
                (true, Some(last), Some(timeout)) if timeout >= 0 && now.saturating_sub(last) <= timeout => {
                    Some(last.saturating_add(timeout))
                }
                (true, Some(_), Some(timeout)) if timeout >= 0 => Some(now - 1),
                _ => None,
            };
            if let Some(at) = refile {
                self.caller()
                    .command::<()>(OP, Effect::Repeatable, redis::cmd("ZADD").arg(expiry).arg(at).arg(entry))
                    .await?;
                continue;
            }
            self.caller().command::<()>(OP, Effect::Repeatable, redis::cmd("ZREM").arg(expiry).arg(entry)).await?;
            let gone = ix.as_deref() != Some(member);
            if let Some(owner) = owner.as_deref().filter(|_| gone) {
                self.caller()
                    .command::<()>(
                        OP,
                        Effect::Repeatable,
                        redis::cmd("ZREM").arg(self.keys().user_raw(owner)).arg(member),
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

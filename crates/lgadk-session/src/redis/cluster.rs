//! Cluster index repair: on a cluster the indexes live in other slots than the session, so
//! `create`, `end`, listing and purge take several calls (see "Cluster" in the module docs).

use lgadk_core::{Error, Result, UserId};
use tokio::task::JoinSet;

use super::conn::Effect;
use super::replies::PurgeOneReply;
use super::reply::parse_field;
use super::scripts;
use super::{REPAIR_GRACE_MS, RedisStore, keys};

/// How listing judges one user-index entry on a cluster.
pub(super) enum EntryState {
    Live,
    /// Remove it from the index.
    Dangling,
    /// Leave it: its session may be being created.
    Pending,
    Corrupt(Error),
}

/// The cluster halves of `create`, `end`, listing and purge: several slots, several calls.
impl RedisStore {
    pub(super) async fn index_new(
        &self,
        user_key: Option<&str>,
        member: &str,
        deadline: Option<i64>,
        expiry_entry: &str,
    ) -> Result<()> {
        let user_add = async {
            match user_key {
                Some(key) => {
                    self.caller()
                        .command::<()>("create", Effect::Repeatable, redis::cmd("ZADD").arg(key).arg(0).arg(member))
                        .await
                }
                None => Ok(()),
            }
        };
        let expiry_add = async {
            match deadline {
                Some(at) => {
                    let cmd = redis::cmd("ZADD").arg(self.keys().expiry()).arg(at).arg(expiry_entry).clone();
                    self.caller().command::<()>("create", Effect::Repeatable, &cmd).await
                }
                None => Ok(()),
            }
        };
        let (user_added, expiry_added) = tokio::join!(user_add, expiry_add);
        user_added.and(expiry_added)
    }

    pub(super) async fn unindex(&self, user_key: Option<&str>, member: &str, expiry_entry: &str) -> Result<()> {
        let user_rem = async {
            match user_key {
                Some(key) => {
                    self.caller()
                        .command::<()>("end", Effect::Repeatable, redis::cmd("ZREM").arg(key).arg(member))
                        .await
                }
                None => Ok(()),
            }
        };
        let expiry_cmd = redis::cmd("ZREM").arg(self.keys().expiry()).arg(expiry_entry).clone();
        let expiry_rem = self.caller().command::<()>("end", Effect::Repeatable, &expiry_cmd);
        let (user_removed, expiry_removed) = tokio::join!(user_rem, expiry_rem);
        user_removed.and(expiry_removed)
    }

    /// Runs `op` for every item concurrently (each on its own slot) and returns the results in
    /// order.
    pub(super) async fn each<I, T, F, Fut>(&self, op: &'static str, items: Vec<I>, mut f: F) -> Result<Vec<T>>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: FnMut(Self, I) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let mut tasks = JoinSet::new();
        let count = items.len();
        for (index, item) in items.into_iter().enumerate() {
            let task = f(self.clone(), item);
            tasks.spawn(async move { (index, task.await) });
        }
        let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            let (index, value) = joined.map_err(|err| Error::backend("redis", op, err))?;
            if let Some(slot) = results.get_mut(index) {
                *slot = Some(value);
            }
        }
        results
            .into_iter()
            .map(|value| value.ok_or_else(|| Error::backend("redis", op, "a task went missing")))
            .collect()
    }

    pub(super) async fn list_cluster(
        &self,
        user: &UserId,
        limit: usize,
        mut bound: String,
    ) -> Result<(Vec<String>, bool)> {
        const OP: &str = "list_user_sessions";
        let key = self.keys().user(user);
        let now = self.now();
        let mut found = Vec::new();
        let mut more = false;
        loop {
            let want = limit + 1 - found.len();
            let cmd = redis::cmd("ZREVRANGEBYLEX").arg(&key).arg(&bound).arg("-").arg("LIMIT").arg(0).arg(want).clone();
            let entries: Vec<String> = self.caller().command(OP, Effect::Read, &cmd).await?;
            let owner = user.as_str().to_owned();
            let states = self
                .each(OP, entries.clone(), move |store, entry| {
                    let owner = owner.clone();
                    async move { store.judge_entry(&entry, &owner, now).await }
                })
                .await?;
            let mut dangling = Vec::new();
            for (entry, state) in entries.iter().zip(states) {
                bound = format!("({entry}");
                match state? {
                    EntryState::Live if found.len() == limit => {
                        more = true;
                        break;
                    }
                    EntryState::Live => found.push(entry.clone()),
                    EntryState::Dangling => dangling.push(entry.clone()),
                    EntryState::Pending => {}
                    EntryState::Corrupt(err) => return Err(err),
                }
            }
            if !dangling.is_empty() {
                self.caller()
                    .command::<()>(OP, Effect::Repeatable, redis::cmd("ZREM").arg(&key).arg(&dangling))
                    .await?;
            }
            if more || entries.len() < want {
                return Ok((found, more));
            }
        }
    }

    pub(super) async fn judge_entry(&self, entry: &str, owner: &str, now: i64) -> Result<EntryState> {
        let Some((created_ms, id)) = keys::parse_member(entry) else { return Ok(EntryState::Dangling) };
        let keys = self.keys().session(&id);
        let cmd = redis::cmd("HMGET").arg(&keys.record).arg(&["ix", "u", "l", "t"]).clone();
        let fields: Vec<Option<String>> = self.caller().command("list_user_sessions", Effect::Read, &cmd).await?;
        let [ix, user, last, timeout] = fields.as_slice() else {
            return Err(Error::backend("redis", "list_user_sessions", "HMGET answered with the wrong arity"));
        };
        let Some(ix) = ix else {
            let recent = now.saturating_sub(created_ms) < REPAIR_GRACE_MS;
            return Ok(if recent { EntryState::Pending } else { EntryState::Dangling });
        };
        if ix != entry || user.as_deref() != Some(owner) {
            return Ok(EntryState::Dangling);
        }
        let last: i64 = match parse_field(&id, "last_active", last.as_deref()) {
            Ok(last) => last,
            Err(err) => return Ok(EntryState::Corrupt(err)),
        };
        let timeout: i64 = match parse_field(&id, "timeout", timeout.as_deref()) {
            Ok(timeout) => timeout,
            Err(err) => return Ok(EntryState::Corrupt(err)),
        };
        let live = timeout < 0 || now.saturating_sub(last) <= timeout;
        Ok(if live { EntryState::Live } else { EntryState::Dangling })
    }

    /// One purge batch on a cluster: `(removed, entries seen)`.
    pub(super) async fn purge_batch_cluster(&self) -> Result<(usize, usize)> {
        const OP: &str = "purge_expired";
        let now = self.now();
        let expiry = self.keys().expiry().to_owned();
        let due = self.due_entries(OP, now).await?;
        let outcomes =
            self.each(OP, due.clone(), move |store, entry| async move { store.purge_one(&entry, now).await }).await?;
        let mut removed = 0;
        let mut drop_entries = Vec::new();
        let mut refile = Vec::new();
        let mut user_entries: Vec<(String, String)> = Vec::new();
        for (entry, outcome) in due.iter().zip(outcomes) {
            let parsed = keys::parse_expiry_entry(entry);
            match (outcome?, parsed) {
                (PurgeOutcome::Refile(at), _) => refile.push((at, entry.clone())),
                (PurgeOutcome::Corrupt, _) | (_, None) => drop_entries.push(entry.clone()),
                (outcome, Some((member, user))) => {
                    if matches!(outcome, PurgeOutcome::Removed) {
                        removed += 1;
                    }
                    drop_entries.push(entry.clone());
                    if let Some(user) = user {
                        user_entries.push((self.keys().user_raw(user), member.to_owned()));
                    }
                }
            }
        }
        if !drop_entries.is_empty() {
            self.caller()
                .command::<()>(OP, Effect::Repeatable, redis::cmd("ZREM").arg(&expiry).arg(&drop_entries))
                .await?;
        }
        if !refile.is_empty() {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&expiry);
            for (at, entry) in &refile {
                cmd.arg(*at).arg(entry);
            }
            self.caller().command::<()>(OP, Effect::Repeatable, &cmd).await?;
        }
        let cleanups = self
            .each(OP, user_entries, |store, (key, member)| async move {
                store.caller().command::<()>(OP, Effect::Repeatable, redis::cmd("ZREM").arg(key).arg(member)).await
            })
            .await?;
        cleanups.into_iter().collect::<Result<()>>()?;
        Ok((removed, due.len()))
    }

    pub(super) async fn purge_one(&self, entry: &str, now: i64) -> Result<PurgeOutcome> {
        let Some((member, _)) = keys::parse_expiry_entry(entry) else { return Ok(PurgeOutcome::Gone) };
        let Some((created_ms, id)) = keys::parse_member(member) else { return Ok(PurgeOutcome::Gone) };
        let reply = self.session_script("purge_expired", Effect::Write, &scripts::PURGE_ONE, &id, &[&member]).await?;
        Ok(match reply {
            PurgeOneReply::Missing if now.saturating_sub(created_ms) < REPAIR_GRACE_MS => {
                PurgeOutcome::Refile(created_ms.saturating_add(REPAIR_GRACE_MS))
            }
            PurgeOneReply::Removed => PurgeOutcome::Removed,
            PurgeOneReply::Live { deadline } => PurgeOutcome::Refile(deadline),
            PurgeOneReply::Corrupt => PurgeOutcome::Corrupt,
            PurgeOneReply::Missing | PurgeOneReply::Stale => PurgeOutcome::Gone,
        })
    }
}

pub(super) enum PurgeOutcome {
    Removed,
    Refile(i64),
    Corrupt,
    /// Missing or stale: drop the entry and its user-index entry.
    Gone,
}

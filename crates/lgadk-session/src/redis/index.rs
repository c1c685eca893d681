//! Listing and purge on a single Redis: read the index, then one script that names every
//! key it touches.

use lgadk_core::{Result, UserId};

use super::conn::Effect;
use super::replies::{ListReply, PurgeReply};
use super::scripts;
use super::{PURGE_BATCH, RedisStore, keys};

impl RedisStore {
    /// Up to `limit` live entries of `user`'s index after `bound`, newest first, and whether
    /// another live one follows.
    pub(super) async fn list_entries(
        &self,
        user: &UserId,
        limit: usize,
        mut bound: String,
    ) -> Result<(Vec<String>, bool)> {
        if self.is_cluster() {
            return self.list_cluster(user, limit, bound).await;
        }
        const OP: &str = "list_user_sessions";
        let key = self.keys().user(user);
        let now = self.now();
        let mut found = Vec::new();
        loop {
            let want = limit + 1 - found.len();
            let cmd = redis::cmd("ZREVRANGEBYLEX").arg(&key).arg(&bound).arg("-").arg("LIMIT").arg(0).arg(want).clone();
            let entries: Vec<String> = self.caller().command(OP, Effect::Read, &cmd).await?;
            let Some(last) = entries.last() else { return Ok((found, false)) };
            bound = format!("({last}");
            let mut invocation = scripts::LIST.prepare_invoke();
            invocation.key(&key);
            let mut checked = Vec::new();
            let mut dropped = Vec::new();
            for entry in &entries {
                match keys::parse_member(entry) {
                    Some((_, id)) => {
                        invocation.key(self.keys().session(&id).record);
                        checked.push(entry);
                    }
                    None => dropped.push(entry),
                }
            }
            invocation.arg(now).arg(user.as_str()).arg(checked.len());
            for entry in checked.iter().chain(&dropped) {
                invocation.arg(*entry);
            }
            let ListReply { live } = self.run(OP, Effect::Read, &invocation, &()).await?;
            for entry in live {
                if found.len() == limit {
                    return Ok((found, true));
                }
                found.push(entry);
            }
            if entries.len() < want {
                return Ok((found, false));
            }
        }
    }

    /// Up to [`PURGE_BATCH`] expiry-index entries whose indexed deadline is before `now`.
    pub(super) async fn due_entries(&self, op: &'static str, now: i64) -> Result<Vec<String>> {
        let cmd = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys().expiry())
            .arg("-inf")
            .arg(format!("({now}"))
            .arg("LIMIT")
            .arg(0)
            .arg(PURGE_BATCH)
            .clone();
        self.caller().command(op, Effect::Read, &cmd).await
    }

    /// One purge batch on a single Redis: `(removed, entries seen)`.
    pub(super) async fn purge_batch_single(&self) -> Result<(usize, usize)> {
        const OP: &str = "purge_expired";
        let now = self.now();
        let expiry = self.keys().expiry();
        let due = self.due_entries(OP, now).await?;
        if due.is_empty() {
            return Ok((0, 0));
        }
        let mut invocation = scripts::PURGE.prepare_invoke();
        invocation.key(expiry);
        let mut checked = Vec::new();
        let mut dropped = Vec::new();
        for entry in &due {
            let parsed = keys::parse_expiry_entry(entry)
                .and_then(|(member, user)| keys::parse_member(member).map(|(_, id)| (id, user)));
            let Some((id, user)) = parsed else {
                dropped.push(entry);
                continue;
            };
            for key in self.keys().session(&id).all() {
                invocation.key(key);
            }
            invocation.key(user.map_or_else(|| expiry.to_owned(), |user| self.keys().user_raw(user)));
            checked.push(entry);
        }
        invocation.arg(now).arg(checked.len());
        for entry in checked.iter().chain(&dropped) {
            invocation.arg(*entry);
        }
        let PurgeReply { removed } = self.run(OP, Effect::Write, &invocation, &()).await?;
        Ok((removed, due.len()))
    }
}

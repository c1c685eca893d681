//! One type per script's reply (`lua/<script>.lua` answers [`FromScriptReply`] for the type
//! named after it), each read in order through the decoder of `reply.rs`.
//!
//! Session scripts take the session's id as context: `NOT_FOUND` becomes `SessionNotFound`
//! (or "absent" for the reads that answer `None`), `CORRUPT` becomes `Corrupt` naming the
//! session and the field, and stored fields that do not decode are `Corrupt` too.

use std::collections::BTreeMap;
use std::time::Duration;

use lgadk_core::session::timestamp;
use lgadk_core::{
    AgentStats, Checkpoint, Error, LatestCheckpoint, Message, Metadata, Result, Session, SessionId, SessionStats,
    TurnStart, UserId,
};

use super::decode::{corrupt_json, decode_checkpoint, decode_metadata};
use super::reply::{Fields, FromScriptReply, parse_field};
use super::scripts::status;

/// Fields the `get` script answers before the metadata pairs (the last, `ag`, may be nil).
const GET_FIELDS: usize = 9;

/// The four counters, in the order the scripts answer them.
fn stats(fields: &mut Fields<'_>, id: &SessionId) -> Result<SessionStats> {
    Ok(SessionStats {
        interactions: fields.stored(id, "interactions")?,
        total_tokens_in: fields.stored(id, "total_tokens_in")?,
        total_tokens_out: fields.stored(id, "total_tokens_out")?,
        total_response_time: Duration::from_micros(fields.stored(id, "total_response_time")?),
        agents: agent_stats(fields.opt_text()?.as_deref(), id)?,
    })
}

/// The per-agent analytics the scripts keep in the session hash's `ag` field: a JSON object
/// of `[interactions, tokens in, tokens out, time in µs]` by agent; absent before the first.
fn agent_stats(raw: Option<&str>, id: &SessionId) -> Result<BTreeMap<String, AgentStats>> {
    let Some(raw) = raw else { return Ok(BTreeMap::new()) };
    // Lua's cjson writes numbers past 10^14 in exponent form: read them as floats (exact up to
    // 2^53, where the scripts stop counting).
    let stored: BTreeMap<String, [f64; 4]> = serde_json::from_str(raw).map_err(|err| Error::corrupt(id, err))?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "saturating casts of counts ≤ 2^53")]
    let count = |value: f64| value as u64;
    Ok(stored
        .into_iter()
        .map(|(agent, [n, tokens_in, tokens_out, us])| {
            let stats = AgentStats {
                interactions: count(n),
                tokens_in: count(tokens_in),
                tokens_out: count(tokens_out),
                time: Duration::from_micros(count(us)),
            };
            (agent, stats)
        })
        .collect())
}

/// `create.lua`.
pub(crate) enum CreateReply {
    /// Created. When it replaced an expired session with this id, that session's owner and
    /// index member, whose entries the caller may still have to remove.
    Created { old_user: Option<String>, old_member: Option<String> },
    /// The same creation, repeated (same op id): what the first one created.
    Repeated { member: String, created_at: i64, last_active: i64 },
    /// A live session has this id: its owner and index member (`""` for none).
    Exists { user: String, member: String },
}

impl FromScriptReply for CreateReply {
    type Context = SessionId;

    fn decode(status: i64, fields: &mut Fields<'_>, id: &SessionId) -> Result<Self> {
        match status {
            // The repeat answers with the first creation's times as well.
            status::OK if fields.remaining() >= 4 => {
                fields.opt_text()?; // the owner: the caller knows it
                let member = fields.text()?;
                let created_at = fields.stored(id, "created_at")?;
                let last_active = fields.stored(id, "last_active")?;
                Ok(Self::Repeated { member, created_at, last_active })
            }
            status::OK => Ok(Self::Created { old_user: fields.text_or_none()?, old_member: fields.text_or_none()? }),
            status::EXISTS => Ok(Self::Exists { user: fields.text()?, member: fields.text()? }),
            status::CORRUPT => Err(fields.corrupt(id)),
            _ => Err(fields.unknown_status()),
        }
    }
}

/// `get.lua`: the session, `None` when it is missing or expired.
pub(crate) struct GetReply {
    pub(crate) session: Option<Session>,
}

impl FromScriptReply for GetReply {
    type Context = SessionId;

    fn decode(status: i64, fields: &mut Fields<'_>, id: &SessionId) -> Result<Self> {
        match fields.session_status(status, id) {
            Ok(()) if status == status::OK => {}
            Ok(()) => return Err(fields.unknown_status()),
            Err(Error::SessionNotFound(_)) => return Ok(Self { session: None }),
            Err(err) => return Err(err),
        }
        if fields.remaining() < GET_FIELDS || !(fields.remaining() - GET_FIELDS).is_multiple_of(2) {
            return Err(fields.bad("wrong number of fields"));
        }
        let mut session = session_record(fields, id)?;
        session.metadata = decode_metadata(id, &fields.rest()?)?;
        Ok(Self { session: Some(session) })
    }
}

/// The nine session fields `get.lua` and `turn_begin.lua` answer first, as a session with
/// no metadata yet.
fn session_record(fields: &mut Fields<'_>, id: &SessionId) -> Result<Session> {
    let (last, timeout, created, user) =
        (fields.opt_text()?, fields.opt_text()?, fields.opt_text()?, fields.opt_text()?);
    let timeout_ms: i64 = parse_field(id, "timeout", timeout.as_deref())?;
    let user_id = match user {
        Some(raw) => Some(UserId::parse(&raw).map_err(|err| Error::corrupt(id, err))?),
        None => None,
    };
    let stats = stats(fields, id)?;
    let created: i64 = parse_field(id, "created_at", created.as_deref())?;
    let last: i64 = parse_field(id, "last_active", last.as_deref())?;
    Ok(Session {
        id: id.clone(),
        user_id,
        created_at: timestamp(created),
        last_active: timestamp(last),
        timeout: u64::try_from(timeout_ms).ok().map(Duration::from_millis),
        metadata: Metadata::new(),
        stats,
    })
}

/// `exists.lua`.
pub(crate) struct ExistsReply {
    pub(crate) live: bool,
}

impl FromScriptReply for ExistsReply {
    type Context = SessionId;

    fn decode(status: i64, fields: &mut Fields<'_>, id: &SessionId) -> Result<Self> {
        match fields.session_status(status, id) {
            Ok(()) if status == status::OK => Ok(Self { live: true }),
            Ok(()) => Err(fields.unknown_status()),
            Err(Error::SessionNotFound(_)) => Ok(Self { live: false }),
            Err(err) => Err(err),
        }
    }
}

/// `touch.lua`: the session's last activity moved to now.
pub(crate) struct TouchReply;

impl FromScriptReply for TouchReply {
    type Context = SessionId;

    fn decode(status: i64, fields: &mut Fields<'_>, id: &SessionId) -> Result<Self> {
        fields.session_status(status, id)?;
        match status {
            status::OK => Ok(Self),
            _ => Err(fields.unknown_status()),
        }
    }
}

/// `track.lua`: the session's totals after the turn.
pub(crate) struct TrackReply {
    pub(crate) stats: SessionStats,
}

impl FromScriptReply for TrackReply {
    type Context = SessionId;

    fn decode(status: i64, fields: &mut Fields<'_>, id: &SessionId) -> Result<Self> {
        fields.session_status(status, id)?;
        match status {
            status::OK => Ok(Self { stats: stats(fields, id)? }),
            _ => Err(fields.unknown_status()),
        }
    }
}

/// `metadata.lua`.
pub(crate) enum MetadataReply {
    /// The metadata after the update.
    Updated(Metadata),
    /// The result would have this size as compact JSON, over the limit; nothing changed.
    TooLarge { size: usize },
}

impl FromScriptReply for MetadataReply {
    type Context = SessionId;

    fn decode(status: i64, fields: &mut Fields<'_>, id: &SessionId) -> Result<Self> {
        fields.session_status(status, id)?;
        match status {
            status::OK => Ok(Self::Updated(decode_metadata(id, &fields.rest()?)?)),
            status::TOO_LARGE => {
                let size = fields.int()?;
                Ok(Self::TooLarge { size: usize::try_from(size).map_err(|_| fields.bad("negative size"))? })
            }
            _ => Err(fields.unknown_status()),
        }
    }
}

/// `list.lua`: the live entries among those checked, in the order given.
pub(crate) struct ListReply {
    pub(crate) live: Vec<String>,
}

impl FromScriptReply for ListReply {
    type Context = ();

    fn decode(status: i64, fields: &mut Fields<'_>, (): &()) -> Result<Self> {
        match status {
            status::OK => Ok(Self { live: fields.rest()? }),
            // A damaged session reached through the index: its id, then the field.
            status::CORRUPT => {
                let id = SessionId::parse(&fields.text()?).map_err(|_| fields.bad("bad session id"))?;
                Err(fields.corrupt(&id))
            }
            _ => Err(fields.unknown_status()),
        }
    }
}

/// `end.lua`.
pub(crate) enum EndReply {
    /// Deleted (with the index entries the script was given); `was_live` unless it had
    /// expired or was missing. Its owner and index member, if it had them.
    Ended { was_live: bool, user: Option<String>, member: Option<String> },
    /// Its owner is not the one the call named: nothing changed; call again naming this one.
    OtherOwner { owner: Option<String> },
}

impl FromScriptReply for EndReply {
    type Context = SessionId;

    fn decode(status: i64, fields: &mut Fields<'_>, _: &SessionId) -> Result<Self> {
        match status {
            status::OTHER_OWNER => {
                let owner = fields.text_or_none()?;
                fields.text()?;
                Ok(Self::OtherOwner { owner })
            }
            status::OK | status::NOT_FOUND => Ok(Self::Ended {
                was_live: status == status::OK,
                user: fields.text_or_none()?,
                member: fields.text_or_none()?,
            }),
            _ => Err(fields.unknown_status()),
        }
    }
}

/// `purge.lua` (single Redis): one batch.
pub(crate) struct PurgeReply {
    /// Expired sessions deleted.
    pub(crate) removed: usize,
}

impl FromScriptReply for PurgeReply {
    type Context = ();

    fn decode(status: i64, fields: &mut Fields<'_>, (): &()) -> Result<Self> {
        match status {
            status::OK => {
                let removed = fields.int()?;
                Ok(Self { removed: usize::try_from(removed).map_err(|_| fields.bad("negative count"))? })
            }
            _ => Err(fields.unknown_status()),
        }
    }
}

/// `purge_one.lua` (cluster): one session named by an expiry-index entry.
pub(crate) enum PurgeOneReply {
    /// No such session.
    Missing,
    /// It had expired and was deleted.
    Removed,
    /// It is live: its current deadline (ms).
    Live { deadline: i64 },
    /// Its fields do not decode; left to its TTL.
    Corrupt,
    /// The entry is stale: the session was recreated, or never expires.
    Stale,
}

impl FromScriptReply for PurgeOneReply {
    type Context = SessionId;

    fn decode(status: i64, fields: &mut Fields<'_>, _: &SessionId) -> Result<Self> {
        match status {
            status::NOT_FOUND => Ok(Self::Missing),
            status::OK => Ok(Self::Removed),
            status::LIVE => Ok(Self::Live { deadline: fields.int()? }),
            status::CORRUPT => Ok(Self::Corrupt),
            status::STALE => Ok(Self::Stale),
            _ => Err(fields.unknown_status()),
        }
    }
}

/// `sweep.lua` (single Redis).
pub(crate) struct SweepReply {
    /// User-index entries dropped.
    pub(crate) dropped_user: i64,
    /// Expiry-index entries dropped.
    pub(crate) dropped_expiry: i64,
}

impl FromScriptReply for SweepReply {
    type Context = ();

    fn decode(status: i64, fields: &mut Fields<'_>, (): &()) -> Result<Self> {
        match status {
            status::OK => Ok(Self { dropped_user: fields.int()?, dropped_expiry: fields.int()? }),
            _ => Err(fields.unknown_status()),
        }
    }
}

/// `cp_version.lua`: the latest checkpoint version, 0 for none.
pub(crate) struct CpVersionReply {
    pub(crate) version: u64,
}

impl FromScriptReply for CpVersionReply {
    type Context = SessionId;

    fn decode(status: i64, fields: &mut Fields<'_>, id: &SessionId) -> Result<Self> {
        fields.session_status(status, id)?;
        match status {
            status::OK => Ok(Self { version: fields.stored(id, "checkpoint version")? }),
            _ => Err(fields.unknown_status()),
        }
    }
}

/// `cp_put.lua`.
pub(crate) enum CpPutReply {
    /// Saved (or saved before, by the same op id): its version, the log's length and start.
    Saved { version: u64, log_len: u64, log_start: u64 },
    /// The latest version is `actual`, not the one the call expected; nothing changed.
    Conflict { actual: u64 },
}

impl FromScriptReply for CpPutReply {
    type Context = SessionId;

    fn decode(status: i64, fields: &mut Fields<'_>, id: &SessionId) -> Result<Self> {
        fields.session_status(status, id)?;
        match status {
            status::OK => Ok(Self::Saved {
                version: fields.stored(id, "checkpoint version")?,
                log_len: fields.stored(id, "log length")?,
                log_start: fields.stored(id, "log start")?,
            }),
            status::CONFLICT => Ok(Self::Conflict { actual: fields.stored(id, "checkpoint version")? }),
            _ => Err(fields.unknown_status()),
        }
    }
}

/// `cp_read.lua`: checkpoints, newest first; none when the session is missing or expired.
pub(crate) struct CpReadReply {
    pub(crate) checkpoints: Vec<Checkpoint>,
}

impl FromScriptReply for CpReadReply {
    type Context = SessionId;

    fn decode(status: i64, fields: &mut Fields<'_>, id: &SessionId) -> Result<Self> {
        match fields.session_status(status, id) {
            Ok(()) if status == status::OK => {}
            Ok(()) => return Err(fields.unknown_status()),
            Err(Error::SessionNotFound(_)) => return Ok(Self { checkpoints: Vec::new() }),
            Err(err) => return Err(err),
        }
        // A version asked for that is not there answers nil.
        let blobs = fields.rest_or_nil()?;
        let checkpoints = blobs.iter().flatten().map(|blob| decode_checkpoint(id, blob)).collect::<Result<_>>()?;
        Ok(Self { checkpoints })
    }
}

/// `cp_messages.lua`: a range of the message log; empty when the session is missing or expired.
pub(crate) struct CpMessagesReply {
    pub(crate) messages: Vec<Message>,
}

impl FromScriptReply for CpMessagesReply {
    type Context = SessionId;

    fn decode(status: i64, fields: &mut Fields<'_>, id: &SessionId) -> Result<Self> {
        match fields.session_status(status, id) {
            Ok(()) if status == status::OK => {}
            Ok(()) => return Err(fields.unknown_status()),
            Err(Error::SessionNotFound(_)) => return Ok(Self { messages: Vec::new() }),
            Err(err) => return Err(err),
        }
        let messages = fields
            .rest()?
            .iter()
            .map(|raw| serde_json::from_str(raw).map_err(|source| corrupt_json(id, "a logged message", source)))
            .collect::<Result<_>>()?;
        Ok(Self { messages })
    }
}

/// `turn_begin.lua`: where a turn starts; `None` when the session is missing or expired.
pub(crate) struct TurnBeginReply {
    pub(crate) start: Option<TurnStart>,
}

impl FromScriptReply for TurnBeginReply {
    type Context = SessionId;

    fn decode(status: i64, fields: &mut Fields<'_>, id: &SessionId) -> Result<Self> {
        match fields.session_status(status, id) {
            Ok(()) if status == status::OK => {}
            Ok(()) => return Err(fields.unknown_status()),
            Err(Error::SessionNotFound(_)) => return Ok(Self { start: None }),
            Err(err) => return Err(err),
        }
        if fields.remaining() < GET_FIELDS + 2 {
            return Err(fields.bad("wrong number of fields"));
        }
        let mut session = session_record(fields, id)?;
        let version: u64 = fields.stored(id, "checkpoint version")?;
        let pairs = usize::try_from(fields.int()?).map_err(|_| fields.bad("negative metadata count"))?;
        if pairs > fields.remaining() || !pairs.is_multiple_of(2) {
            return Err(fields.bad("wrong number of metadata fields"));
        }
        let metadata = (0..pairs).map(|_| fields.text()).collect::<Result<Vec<_>>>()?;
        session.metadata = decode_metadata(id, &metadata)?;
        let mut rest = fields.rest()?.into_iter();
        let latest = match rest.next() {
            None => None,
            Some(blob) => {
                let checkpoint = decode_checkpoint(id, &blob)?;
                let messages = rest
                    .map(|raw| {
                        serde_json::from_str(&raw).map_err(|source| corrupt_json(id, "a logged message", source))
                    })
                    .collect::<Result<Vec<Message>>>()?;
                Some(LatestCheckpoint { checkpoint, messages })
            }
        };
        Ok(Self { start: Some(TurnStart { session, version, latest }) })
    }
}

/// `turn_commit.lua`.
pub(crate) enum TurnCommitReply {
    /// Committed (or committed before, by the same checkpoint op id): the checkpoint's version,
    /// the log's length and start, the session's totals and, when the commit merged metadata,
    /// the metadata.
    Saved { version: u64, log_len: u64, log_start: u64, stats: SessionStats, metadata: Metadata },
    /// The latest version is `actual`, not the one the call expected; nothing changed.
    Conflict { actual: u64 },
    /// The merged metadata would have this size as compact JSON, over the limit; nothing changed.
    TooLarge { size: usize },
}

impl FromScriptReply for TurnCommitReply {
    type Context = SessionId;

    fn decode(status: i64, fields: &mut Fields<'_>, id: &SessionId) -> Result<Self> {
        fields.session_status(status, id)?;
        match status {
            // The commit ran: a reply cut short must read as an unknown outcome, not as data.
            status::OK if fields.remaining() < 8 => Err(fields.bad("reply too short")),
            status::OK => Ok(Self::Saved {
                version: fields.stored(id, "checkpoint version")?,
                log_len: fields.stored(id, "log length")?,
                log_start: fields.stored(id, "log start")?,
                stats: stats(fields, id)?,
                metadata: decode_metadata(id, &fields.rest()?)?,
            }),
            status::CONFLICT => Ok(Self::Conflict { actual: fields.stored(id, "checkpoint version")? }),
            status::TOO_LARGE => {
                let size = fields.int()?;
                Ok(Self::TooLarge { size: usize::try_from(size).map_err(|_| fields.bad("negative size"))? })
            }
            _ => Err(fields.unknown_status()),
        }
    }
}

#[cfg(test)]
mod tests {
    use lgadk_core::Outcome::{self, NotApplied, Unknown};
    use redis::Value;

    use super::super::reply::Reply;
    use super::*;

    fn text(value: &str) -> Value {
        Value::BulkString(value.as_bytes().to_vec())
    }

    fn decode<T: FromScriptReply>(op: &'static str, items: Vec<Value>, context: &T::Context) -> Result<T> {
        Reply::new(op, items).decode(context)
    }

    fn outcome<T: FromScriptReply>(op: &'static str, items: Vec<Value>, context: &T::Context) -> Option<Outcome> {
        decode::<T>(op, items, context).err().and_then(|err| err.outcome())
    }

    #[test]
    fn every_reply_rejects_an_unknown_status_with_the_outcome_of_its_script() {
        let id = SessionId::default();
        let unknown = || vec![Value::Int(99), text("1"), text("2"), text("3"), text("4")];
        assert_eq!(outcome::<CreateReply>("create", unknown(), &id), Some(Unknown));
        assert_eq!(outcome::<GetReply>("get", unknown(), &id), Some(NotApplied));
        assert_eq!(outcome::<ExistsReply>("exists", unknown(), &id), Some(NotApplied));
        assert_eq!(outcome::<TouchReply>("touch", unknown(), &id), Some(Unknown));
        assert_eq!(outcome::<TrackReply>("track_interaction", unknown(), &id), Some(Unknown));
        assert_eq!(outcome::<MetadataReply>("update_metadata", unknown(), &id), Some(Unknown));
        assert_eq!(outcome::<ListReply>("list_user_sessions", unknown(), &()), Some(NotApplied));
        assert_eq!(outcome::<EndReply>("end", unknown(), &id), Some(Unknown));
        assert_eq!(outcome::<PurgeReply>("purge_expired", unknown(), &()), Some(Unknown));
        assert_eq!(outcome::<PurgeOneReply>("purge_expired", unknown(), &id), Some(Unknown));
        assert_eq!(outcome::<SweepReply>("create", unknown(), &()), Some(Unknown));
        assert_eq!(outcome::<CpVersionReply>("checkpoint_version", unknown(), &id), Some(NotApplied));
        assert_eq!(outcome::<CpPutReply>("checkpoint_put", unknown(), &id), Some(Unknown));
        assert_eq!(outcome::<CpReadReply>("checkpoint_read", unknown(), &id), Some(NotApplied));
        assert_eq!(outcome::<CpMessagesReply>("checkpoint_messages", unknown(), &id), Some(NotApplied));
        assert_eq!(outcome::<TurnBeginReply>("begin_turn", unknown(), &id), Some(NotApplied));
        assert_eq!(outcome::<TurnCommitReply>("commit_turn", unknown(), &id), Some(Unknown));
    }

    #[test]
    fn shared_statuses_mean_the_same_for_every_session_script() {
        let id = SessionId::default();
        let not_found = || vec![Value::Int(status::NOT_FOUND)];
        let corrupt = || vec![Value::Int(status::CORRUPT), text("timeout")];
        assert!(matches!(decode::<TrackReply>("track_interaction", not_found(), &id), Err(Error::SessionNotFound(_))));
        assert!(matches!(decode::<GetReply>("get", not_found(), &id), Ok(GetReply { session: None })));
        assert!(matches!(decode::<ExistsReply>("exists", not_found(), &id), Ok(ExistsReply { live: false })));
        assert!(
            matches!(decode::<CpReadReply>("checkpoint_read", not_found(), &id), Ok(r) if r.checkpoints.is_empty())
        );
        for err in [
            decode::<TrackReply>("track_interaction", corrupt(), &id).err(),
            decode::<GetReply>("get", corrupt(), &id).err(),
            decode::<CpPutReply>("checkpoint_put", corrupt(), &id).err(),
            decode::<CreateReply>("create", corrupt(), &id).err(),
        ] {
            assert!(matches!(err, Some(Error::Corrupt { .. })), "{err:?}");
        }
    }

    #[test]
    fn replies_read_their_fields_in_order() {
        let id = SessionId::default();
        let repeat = vec![Value::Int(status::OK), text("alice"), text("m"), text("5"), text("7")];
        assert!(matches!(
            decode::<CreateReply>("create", repeat, &id),
            Ok(CreateReply::Repeated { member, created_at: 5, last_active: 7 }) if member == "m"
        ));
        let fresh = vec![Value::Int(status::OK), text(""), text("")];
        assert!(matches!(
            decode::<CreateReply>("create", fresh, &id),
            Ok(CreateReply::Created { old_user: None, old_member: None })
        ));
        let other = vec![Value::Int(status::OTHER_OWNER), text("bob"), text("m")];
        assert!(
            matches!(decode::<EndReply>("end", other, &id), Ok(EndReply::OtherOwner { owner: Some(o) }) if o == "bob")
        );
        let live = vec![Value::Int(status::LIVE), text("42")];
        assert!(matches!(
            decode::<PurgeOneReply>("purge_expired", live, &id),
            Ok(PurgeOneReply::Live { deadline: 42 })
        ));
        let conflict = vec![Value::Int(status::CONFLICT), text("3")];
        assert!(matches!(
            decode::<CpPutReply>("checkpoint_put", conflict, &id),
            Ok(CpPutReply::Conflict { actual: 3 })
        ));
        let short = vec![Value::Int(status::OK), text("1"), text("2")];
        assert_eq!(outcome::<GetReply>("get", short, &id), Some(NotApplied), "get answers nine fields");
    }

    /// `turn_begin.lua`: the session's nine fields (the per-agent analytics last), the version, the metadata count and
    /// pairs, then (only when stale) the checkpoint and its log.
    #[test]
    fn turn_replies_read_their_fields_in_order() {
        let id = SessionId::default();
        let record = || {
            let mut fields = ["7", "-1", "5", "alice", "2", "10", "20", "3000"].map(text).to_vec();
            fields.push(text(r#"{"billing":[2,10,20,3000]}"#));
            fields
        };
        let begin = |tail: Vec<Value>| [vec![Value::Int(status::OK)], record(), tail].concat();
        let warm = begin(vec![text("4"), Value::Int(2), text("plan"), text("\"pro\"")]);
        let start = decode::<TurnBeginReply>("begin_turn", warm, &id).unwrap().start.unwrap();
        assert_eq!((start.version, start.latest, start.session.stats.interactions), (4, None, 2));
        assert_eq!(start.session.stats.agents["billing"].time, Duration::from_millis(3));
        assert_eq!(start.session.metadata.get("plan"), Some(&serde_json::json!("pro")));
        assert_eq!(start.session.user_id.as_ref().map(UserId::as_str), Some("alice"));
        let blob = r#"{"version":4,"log_len":3,"log_start":2,"step":2,"node":null,"at":9,"state":{}}"#;
        let message = serde_json::to_string(&Message::user("hi")).unwrap();
        let cold = begin(vec![text("4"), Value::Int(0), text(blob), text(&message)]);
        let latest = decode::<TurnBeginReply>("begin_turn", cold, &id).unwrap().start.unwrap().latest.unwrap();
        assert_eq!((latest.checkpoint.version, latest.checkpoint.log_len, latest.checkpoint.log_start), (4, 3, 2));
        assert_eq!(latest.messages, [Message::user("hi")]);
        let odd = begin(vec![text("4"), Value::Int(3), text("a"), text("1"), text("b")]);
        assert_eq!(outcome::<TurnBeginReply>("begin_turn", odd, &id), Some(NotApplied));
        let absent = vec![Value::Int(status::NOT_FOUND)];
        assert!(decode::<TurnBeginReply>("begin_turn", absent, &id).unwrap().start.is_none());

        let mut saved = ["3", "8", "6", "1", "2", "3", "4"].map(text).to_vec();
        saved.extend([Value::Nil, text("k"), text("1")]);
        let commit = decode::<TurnCommitReply>("commit_turn", [vec![Value::Int(status::OK)], saved].concat(), &id);
        assert!(matches!(
            commit,
            Ok(TurnCommitReply::Saved { version: 3, log_len: 8, log_start: 6, stats, metadata })
                if stats.interactions == 1 && stats.agents.is_empty() && metadata.get("k") == Some(&serde_json::json!(1))
        ));
        let damaged =
            [vec![Value::Int(status::OK)], ["3", "8", "0", "1", "2", "3", "4", "[1]"].map(text).to_vec()].concat();
        assert!(matches!(decode::<TurnCommitReply>("commit_turn", damaged, &id), Err(Error::Corrupt { .. })));
        let too_large = vec![Value::Int(status::TOO_LARGE), Value::Int(2048)];
        assert!(matches!(
            decode::<TurnCommitReply>("commit_turn", too_large, &id),
            Ok(TurnCommitReply::TooLarge { size: 2048 })
        ));
        let conflict = vec![Value::Int(status::CONFLICT), text("5")];
        assert!(matches!(
            decode::<TurnCommitReply>("commit_turn", conflict, &id),
            Ok(TurnCommitReply::Conflict { actual: 5 })
        ));
        let short = vec![Value::Int(status::OK), text("3")];
        assert_eq!(outcome::<TurnCommitReply>("commit_turn", short, &id), Some(Unknown), "a write's bad reply");
    }
}

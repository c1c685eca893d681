//! Long-term memory: JSON items under namespaces that outlive any one session, the
//! [`MemoryStore`] contract every backend implements, and the [`Embedder`] contract semantic
//! search goes through.
//!
//! An item is a JSON value stored under a [`Namespace`] (a path such as
//! `["users", "alice", "prefs"]`) and a [`MemoryKey`]. Applications scope what an agent can
//! see by namespace: everything about one user sits under `["users", <user>]`, and listing or
//! searching takes a namespace *prefix*.
//!
//! ```
//! use lgadk_core::memory::{MemoryKey, Namespace, SearchRequest, matches_filter};
//! use lgadk_core::serde_json::json;
//!
//! let prefs = Namespace::new(["users", "alice", "prefs"])?;
//! let user = Namespace::new(["users", "alice"])?;
//! assert!(prefs.starts_with(&user));
//! assert!(Namespace::new(["users", ""]).is_err());
//! let key = MemoryKey::parse("theme")?;
//! assert_eq!(key.as_str(), "theme");
//!
//! let request = SearchRequest::under(user).with_filter(json!({"kind": "pref"})).with_query("dark theme");
//! assert!(matches_filter(&json!({"kind": "pref", "v": "dark"}), &request.filter));
//! # Ok::<(), lgadk_core::Error>(())
//! ```
//!
//! The pure pieces every backend shares, so that they all answer the same way, live here too:
//! [`matches_filter`] (what a filter means), [`text_score`] (the ranking of a text query
//! without an embedder), [`cosine`] (the ranking with one), [`embedding_text`] (what of a value
//! is embedded) and [`rank`], which applies all of them to a backend's candidates.

mod contract;
mod search;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use contract::{
    DEFAULT_SEARCH_LIMIT, Embedder, ItemCursor, ItemPage, ListRequest, MAX_KEY_LEN, MAX_NAMESPACE_DEPTH,
    MAX_PAGE_LIMIT, MAX_SEGMENT_LEN, MemoryItem, MemoryKey, MemoryStore, Namespace, NamespaceRequest, SearchRequest,
    check_value, embed_checked, expires_at,
};
pub use search::{Candidate, EmbedFields, cosine, embedding_text, matches_filter, rank, text_score, words};

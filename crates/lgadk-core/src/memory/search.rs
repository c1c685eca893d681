//! The pure parts of search every backend shares: filters, text scores, cosine similarity,
//! the text that is embedded, and the ranking of candidates.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde_json::Value;

use super::contract::{MemoryItem, MemoryKey, SearchRequest};
use crate::json;

/// Whether `value` contains `filter`, the meaning of [`SearchRequest::filter`] (PostgreSQL's
/// `jsonb @>` for a filter that is an object):
/// - `null` as the whole filter matches every value; `{}` every object;
/// - an object contains another when it has each of its keys with a value containing the
///   filter's (so nested objects filter on nested fields: `{"user": {"plan": "pro"}}`);
/// - an array contains another when each element of the filter is contained in some element
///   of the value (`{"tags": ["a"]}` matches `{"tags": ["b", "a"]}`);
/// - scalars are equal: strings and booleans exactly, numbers by value (`1` equals `1.0`),
///   and a nested `null` equals `null`.
///
/// Iterative: the stack stays flat however deep either value nests.
pub fn matches_filter(value: &Value, filter: &Value) -> bool {
    if filter.is_null() {
        return true;
    }
    let mut pending: Vec<(&Value, &Value)> = vec![(value, filter)];
    while let Some((value, filter)) = pending.pop() {
        match (value, filter) {
            (Value::Object(value), Value::Object(filter)) => {
                for (key, wanted) in filter {
                    match value.get(key) {
                        Some(got) => pending.push((got, wanted)),
                        None => return false,
                    }
                }
            }
            (Value::Array(value), Value::Array(filter)) => {
                let all = filter.iter().all(|wanted| value.iter().any(|got| matches_filter(got, wanted)));
                if !all {
                    return false;
                }
            }
            (Value::Number(a), Value::Number(b)) => {
                let equal = match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
                    (Some(a), Some(b), _, _) => a == b,
                    (_, _, Some(a), Some(b)) => a == b,
                    _ => a.as_f64() == b.as_f64(),
                };
                if !equal {
                    return false;
                }
            }
            (value, filter) => {
                if value != filter {
                    return false;
                }
            }
        }
    }
    true
}

/// The words of `text` as text search counts them: maximal runs of alphanumeric characters,
/// lowercased, each once, in order.
pub fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty()).map(str::to_lowercase).collect()
}

/// The text score of an item for `query`: the share of the query's distinct [`words`] found
/// among the words of `key` and of every string in `value` (object keys and string values, at
/// any depth), in `0.0..=1.0`; 0 when the query has no words.
pub fn text_score(query: &str, key: &MemoryKey, value: &Value) -> f64 {
    let wanted = words(query);
    if wanted.is_empty() {
        return 0.0;
    }
    let mut found = words(key.as_str());
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            Value::String(text) => found.extend(words(text)),
            Value::Array(items) => pending.extend(items),
            Value::Object(map) => {
                for (key, child) in map {
                    found.extend(words(key));
                    pending.push(child);
                }
            }
            _ => {}
        }
    }
    let hits = wanted.iter().filter(|word| found.contains(*word)).count();
    // Both counts are far below 2^52, so the division is exact enough.
    #[allow(clippy::cast_precision_loss, reason = "word counts are small")]
    let score = hits as f64 / wanted.len() as f64;
    score
}

/// Cosine similarity of two vectors, in `-1.0..=1.0`, computed in `f64`; `None` when their
/// lengths differ, either is empty or either has no length (all zeros).
pub fn cosine(a: &[f32], b: &[f32]) -> Option<f64> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let (mut dot, mut norm_a, mut norm_b) = (0.0_f64, 0.0_f64, 0.0_f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        norm_a += x * x;
        norm_b += y * y;
    }
    if norm_a == 0.0 || norm_b == 0.0 || !dot.is_finite() || !norm_a.is_finite() || !norm_b.is_finite() {
        return None;
    }
    Some((dot / (norm_a.sqrt() * norm_b.sqrt())).clamp(-1.0, 1.0))
}

/// Which part of a value a store with an embedder embeds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EmbedFields {
    /// The whole value: a string as it is, anything else as compact JSON.
    #[default]
    Whole,
    /// The fields at these paths of an object value (`["profile", "bio"]` is `value.profile.bio`),
    /// in this order, joined by newlines: a string as it is, anything else as compact JSON.
    /// Missing paths are skipped; a value with none of them gets no embedding.
    Paths(Vec<Vec<String>>),
}

impl EmbedFields {
    /// The fields at these dotted paths (`"profile.bio"`).
    pub fn paths<I, S>(paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::Paths(paths.into_iter().map(|path| path.as_ref().split('.').map(str::to_owned).collect()).collect())
    }
}

/// The text a store embeds for `value` (see [`EmbedFields`]); `None` when there is nothing to
/// embed (no configured path is present, or the text would be empty).
pub fn embedding_text(value: &Value, fields: &EmbedFields) -> Option<String> {
    let as_text = |value: &Value| match value {
        Value::String(text) => Some(text.clone()),
        other => json::to_string(other).ok(),
    };
    let text = match fields {
        EmbedFields::Whole => as_text(value)?,
        EmbedFields::Paths(paths) => {
            let parts: Vec<String> = paths
                .iter()
                .filter_map(|path| path.iter().try_fold(value, |at, segment| at.get(segment.as_str())))
                .filter_map(as_text)
                .collect();
            parts.join("\n")
        }
    };
    (!text.trim().is_empty()).then_some(text)
}

/// An item a backend read for a search, with its stored embedding if it has one.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The item (live: the backend left expired ones out).
    pub item: MemoryItem,
    /// Its stored embedding.
    pub embedding: Option<Vec<f32>>,
}

/// Applies a [`SearchRequest`] to a backend's candidates: keeps the ones under the prefix that
/// match the filter, scores and orders them as the request's documentation says, and returns
/// the requested page. `query_vector` is the embedded query when the store has an embedder
/// (the request then ranks by cosine); `None` ranks a query by [`text_score`].
///
/// Backends may narrow the candidates first (by prefix, by filter); the result is the same.
pub fn rank(candidates: Vec<Candidate>, request: &SearchRequest, query_vector: Option<&[f32]>) -> Vec<MemoryItem> {
    let matching = candidates.into_iter().filter(|candidate| {
        let item = &candidate.item;
        request.prefix.as_ref().is_none_or(|prefix| item.namespace.starts_with(prefix))
            && matches_filter(&item.value, &request.filter)
    });
    let limit = request.effective_limit();
    let Some(query) = request.effective_query() else {
        let mut items: Vec<MemoryItem> = matching.map(|candidate| candidate.item).collect();
        items.sort_by(|a, b| (&a.namespace, &a.key).cmp(&(&b.namespace, &b.key)));
        return items
            .into_iter()
            .skip(request.offset)
            .take(limit)
            .map(|item| MemoryItem { score: None, ..item })
            .collect();
    };
    let mut scored: Vec<MemoryItem> = matching
        .filter_map(|Candidate { item, embedding }| {
            let score = match query_vector {
                Some(query_vector) => cosine(query_vector, embedding.as_deref()?)?,
                None => Some(text_score(query, &item.key, &item.value)).filter(|score| *score > 0.0)?,
            };
            Some(MemoryItem { score: Some(score), ..item })
        })
        .collect();
    scored.sort_by(|a, b| {
        let by_score = b.score.partial_cmp(&a.score).unwrap_or(Ordering::Equal);
        by_score
            .then_with(|| b.updated_at.cmp(&a.updated_at))
            .then_with(|| (&a.namespace, &a.key).cmp(&(&b.namespace, &b.key)))
    });
    scored.into_iter().skip(request.offset).take(limit).collect()
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use serde_json::json;

    use super::*;
    use crate::memory::Namespace;

    #[test]
    fn filters_mean_containment() {
        let value = json!({"kind": "pref", "n": 1, "user": {"plan": "pro", "tags": ["a", "b"]}, "none": null});
        for yes in [
            json!(null),
            json!({}),
            json!({"kind": "pref"}),
            json!({"n": 1.0}),
            json!({"user": {"plan": "pro"}}),
            json!({"user": {"tags": ["b"]}}),
            json!({"user": {"tags": []}}),
            json!({"none": null}),
        ] {
            assert!(matches_filter(&value, &yes), "{yes}");
        }
        for no in [
            json!({"kind": "fact"}),
            json!({"missing": null}),
            json!({"n": "1"}),
            json!({"user": {"plan": "free"}}),
            json!({"user": {"tags": ["c"]}}),
            json!({"user": {"tags": "a"}}),
            json!([1]),
        ] {
            assert!(!matches_filter(&value, &no), "{no}");
        }
        assert!(!matches_filter(&json!("text"), &json!({"kind": "pref"})));
    }

    #[test]
    fn text_score_is_the_share_of_query_words_found() {
        let key = MemoryKey::parse("ui-theme").unwrap();
        let value = json!({"note": "Prefers DARK mode", "tags": ["Night"]});
        assert!((text_score("dark theme", &key, &value) - 1.0).abs() < f64::EPSILON);
        assert!((text_score("dark light", &key, &value) - 0.5).abs() < f64::EPSILON);
        assert!((text_score("NOTE", &key, &value) - 1.0).abs() < f64::EPSILON);
        assert!(text_score("pizza", &key, &value).abs() < f64::EPSILON);
        assert!(text_score("  ", &key, &value).abs() < f64::EPSILON);
    }

    #[test]
    fn cosine_of_vectors() {
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 3.0]).unwrap().abs() < 1e-12);
        assert!((cosine(&[1.0, 0.0], &[-1.0, 0.0]).unwrap() + 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[1.0], &[1.0, 0.0]), None);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), None);
        assert_eq!(cosine(&[], &[]), None);
    }

    #[test]
    fn embedding_text_takes_the_configured_fields() {
        let value = json!({"title": "Pizza", "body": {"text": "with basil"}, "n": 3});
        assert_eq!(embedding_text(&json!("plain"), &EmbedFields::Whole).as_deref(), Some("plain"));
        assert_eq!(
            embedding_text(&value, &EmbedFields::Whole).as_deref(),
            Some(r#"{"body":{"text":"with basil"},"n":3,"title":"Pizza"}"#)
        );
        let fields = EmbedFields::paths(["title", "body.text", "missing", "n"]);
        assert_eq!(embedding_text(&value, &fields).as_deref(), Some("Pizza\nwith basil\n3"));
        assert_eq!(embedding_text(&value, &EmbedFields::paths(["nope"])), None);
        assert_eq!(embedding_text(&json!(" "), &EmbedFields::Whole), None);
    }

    fn item(ns: &[&str], key: &str, value: Value, updated_ms: i64) -> Candidate {
        let at = DateTime::<Utc>::from_timestamp_millis(updated_ms).unwrap();
        let item = MemoryItem {
            namespace: Namespace::new(ns).unwrap(),
            key: MemoryKey::parse(key).unwrap(),
            value,
            created_at: at,
            updated_at: at,
            expires_at: None,
            score: None,
        };
        Candidate { item, embedding: None }
    }

    #[test]
    fn rank_orders_and_pages() {
        let candidates = vec![
            item(&["u", "b"], "k", json!({"t": "dark mode"}), 1),
            item(&["u", "a"], "k", json!({"t": "dark"}), 2),
            item(&["u", "a"], "j", json!({"t": "dark"}), 1),
            item(&["v"], "k", json!({"t": "dark mode"}), 3),
        ];
        let under_u = SearchRequest::under(Namespace::new(["u"]).unwrap());
        let keys = |items: Vec<MemoryItem>| {
            items.into_iter().map(|i| format!("{}:{}", i.namespace, i.key)).collect::<Vec<_>>()
        };
        assert_eq!(keys(rank(candidates.clone(), &under_u, None)), ["u/a:j", "u/a:k", "u/b:k"]);
        let query = under_u.clone().with_query("dark mode");
        assert_eq!(keys(rank(candidates.clone(), &query, None)), ["u/b:k", "u/a:k", "u/a:j"]);
        assert_eq!(keys(rank(candidates.clone(), &query.with_page(1, 1), None)), ["u/a:k"]);
        let none = under_u.with_query("pizza");
        assert!(rank(candidates, &none, None).is_empty());
    }
}

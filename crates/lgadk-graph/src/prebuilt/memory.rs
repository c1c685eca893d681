//! Memory tools: `remember` and `recall`, long-term memory scoped to the run's user.
//!
//! Both reach the store through the tool call's context
//! ([`ToolContext::memory`](lgadk_core::ToolContext::memory), which a graph given a store with
//! [`CompiledGraph::with_memory`](crate::CompiledGraph::with_memory) fills in) and work only in
//! the namespace `["users", <the run's user>, <section>]` (section `memories` by default). The
//! user comes from the run (the session's owner), never from the model's arguments, so a
//! model cannot read or write another user's memories; a run without a user gets a tool error
//! that says so, and nothing is read or written.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lgadk_core::memory::{MemoryKey, MemoryStore, Namespace, SearchRequest};
use lgadk_core::serde_json::{Value, json};
use lgadk_core::tool::check_arguments;
use lgadk_core::{Result, Tool, ToolContext, ToolError, ToolOutput, ToolSet, ToolSpec};

/// The name of the tool that stores a memory.
pub const REMEMBER_TOOL: &str = "remember";
/// The name of the tool that searches memories.
pub const RECALL_TOOL: &str = "recall";
/// The section (last namespace segment) memories go to by default.
pub const DEFAULT_MEMORY_SECTION: &str = "memories";
/// How many memories `recall` returns by default.
pub const DEFAULT_RECALL_LIMIT: usize = 5;

/// Guidance for a system prompt, so a model uses the memory tools well.
pub const MEMORY_TOOLS_PROMPT: &str = "You have a long-term memory of this user that lasts across conversations. \
When the user tells you a lasting fact or preference about themselves, call `remember` with it in one short \
sentence. Before answering a request where their preferences or history matter, call `recall` with what you \
need to know.";

/// Longest memory text `remember` stores, in bytes.
const MAX_MEMORY_LEN: usize = 2_000;
/// Longest topic, in characters, once made a key.
const MAX_TOPIC_LEN: usize = 64;

/// The memory tools, configured: where they keep memories, how many `recall` returns, and
/// whether memories expire.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lgadk_core::Result<()> {
/// use std::sync::Arc;
/// use lgadk_core::serde_json::json;
/// use lgadk_core::{ToolContext, ToolError, ToolSet, UserId};
/// use lgadk_graph::prebuilt::MemoryTools;
/// use lgadk_session::InMemoryMemoryStore;
///
/// let tools = MemoryTools::new().add_to(ToolSet::new())?;
/// let store = Arc::new(InMemoryMemoryStore::new());
/// let ada = ToolContext::new("call-1").with_user(UserId::parse("ada")?).with_memory(store.clone());
///
/// tools.call("remember", json!({"memory": "Prefers window seats"}), ada.clone()).await.unwrap();
/// let found = tools.call("recall", json!({"query": "seat"}), ada).await.unwrap().into_content();
/// assert!(found.contains("Prefers window seats"), "{found}");
///
/// // Another user sees nothing of Ada's; a call without a user is refused.
/// let bob = ToolContext::new("call-2").with_user(UserId::parse("bob")?).with_memory(store.clone());
/// let nothing = tools.call("recall", json!({"query": "seat"}), bob).await.unwrap().into_content();
/// assert!(!nothing.contains("window"), "{nothing}");
/// let anonymous = ToolContext::new("call-3").with_memory(store);
/// let refused = tools.call("recall", json!({"query": "seat"}), anonymous).await.unwrap_err();
/// assert!(refused.to_string().contains("no user"), "{refused}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct MemoryTools {
    section: String,
    recall_limit: usize,
    ttl: Option<Duration>,
}

impl Default for MemoryTools {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryTools {
    /// The tools with memories under `["users", <user>, "memories"]`, `recall` returning up
    /// to [`DEFAULT_RECALL_LIMIT`] of them, memories that never expire.
    pub fn new() -> Self {
        Self { section: DEFAULT_MEMORY_SECTION.to_owned(), recall_limit: DEFAULT_RECALL_LIMIT, ttl: None }
    }

    /// Keeps memories under `["users", <user>, section]` instead (a section is checked like a
    /// namespace segment when a tool runs).
    pub fn with_section(mut self, section: impl Into<String>) -> Self {
        self.section = section.into();
        self
    }

    /// `recall` returns at most `limit` memories (at least 1).
    pub fn with_recall_limit(mut self, limit: usize) -> Self {
        self.recall_limit = limit.max(1);
        self
    }

    /// Memories expire `ttl` after they were last remembered.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The `remember` tool.
    pub fn remember(&self) -> Arc<dyn Tool> {
        Arc::new(Remember { config: self.clone(), spec: remember_spec() })
    }

    /// The `recall` tool.
    pub fn recall(&self) -> Arc<dyn Tool> {
        Arc::new(Recall { config: self.clone(), spec: recall_spec() })
    }

    /// `tools` with `remember` and `recall` added.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](lgadk_core::Error::InvalidConfig) when `tools` has a tool of
    /// either name already.
    pub fn add_to(&self, tools: ToolSet) -> Result<ToolSet> {
        tools.with_shared(self.remember())?.with_shared(self.recall())
    }

    /// The namespace of `ctx`'s user, or the tool error that says why there is none.
    fn namespace<'c>(
        &self,
        ctx: &'c ToolContext,
    ) -> std::result::Result<(Namespace, &'c Arc<dyn MemoryStore>), ToolError> {
        let Some(store) = ctx.memory() else {
            return Err(ToolError::failed("long-term memory is not available: the graph was given no memory store"));
        };
        let Some(user) = ctx.user_id() else {
            return Err(ToolError::failed(
                "memory is kept per user, and this conversation has no user: nothing was read or written",
            ));
        };
        let namespace = Namespace::new(["users", user.as_str(), self.section.as_str()])
            .map_err(|err| ToolError::failed(format!("memory section `{}` is not usable: {err}", self.section)))?;
        Ok((namespace, store))
    }
}

impl fmt::Display for MemoryTools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "memory tools in users/<user>/{}", self.section)
    }
}

fn remember_spec() -> ToolSpec {
    ToolSpec::new(
        REMEMBER_TOOL,
        "Stores a lasting fact or preference about the user in long-term memory, available in later conversations.",
        json!({
            "type": "object",
            "properties": {
                "memory": {
                    "type": "string",
                    "description": "The fact to remember, as one short sentence, e.g. `Prefers window seats on flights`."
                },
                "topic": {
                    "type": "string",
                    "description": "Optional short topic such as `seat_preference`: a new memory on the same topic replaces the old one."
                }
            },
            "required": ["memory"]
        }),
    )
    .with_keywords(["memorize", "keep in mind"])
}

fn recall_spec() -> ToolSpec {
    ToolSpec::new(
        RECALL_TOOL,
        "Searches long-term memory for what the user told you in earlier conversations: facts and preferences.",
        json!({
            "type": "object",
            "properties": {
                "query": {
                    "type": "string",
                    "description": "What to look for, e.g. `seat and meal preferences`."
                }
            },
            "required": ["query"]
        }),
    )
    .with_keywords(["preference", "what do you know about me"])
}

/// The `remember` tool.
struct Remember {
    config: MemoryTools,
    spec: ToolSpec,
}

#[async_trait]
impl Tool for Remember {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, arguments: Value, ctx: ToolContext) -> std::result::Result<ToolOutput, ToolError> {
        check_arguments(REMEMBER_TOOL, &self.spec.parameters, &arguments)?;
        let (namespace, store) = self.config.namespace(&ctx)?;
        let text = arguments.get("memory").and_then(Value::as_str).unwrap_or_default().trim();
        let invalid = |reason: &str| ToolError::InvalidArguments {
            tool: REMEMBER_TOOL.to_owned(),
            field: Some("memory".to_owned()),
            reason: reason.to_owned(),
        };
        if text.is_empty() {
            return Err(invalid("the memory is empty"));
        }
        if text.len() > MAX_MEMORY_LEN {
            return Err(invalid("the memory is longer than 2000 bytes: keep it to one short sentence"));
        }
        let topic = arguments.get("topic").and_then(Value::as_str).map(topic_key).filter(|t| !t.is_empty());
        let key = match &topic {
            Some(topic) => format!("topic-{topic}"),
            None => format!("m-{:016x}", fnv1a(text.to_lowercase().as_bytes())),
        };
        let key = MemoryKey::parse(&key).map_err(ToolError::failed)?;
        let mut value = json!({ "text": text });
        if let Some(topic) = &topic {
            value["topic"] = Value::String(topic.clone());
        }
        store
            .put(&namespace, &key, value, self.config.ttl)
            .await
            .map_err(|err| ToolError::failed(format!("could not store the memory: {err}")))?;
        Ok(ToolOutput::Text(format!("Remembered: {text}")))
    }
}

/// The `recall` tool.
struct Recall {
    config: MemoryTools,
    spec: ToolSpec,
}

#[async_trait]
impl Tool for Recall {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, arguments: Value, ctx: ToolContext) -> std::result::Result<ToolOutput, ToolError> {
        check_arguments(RECALL_TOOL, &self.spec.parameters, &arguments)?;
        let (namespace, store) = self.config.namespace(&ctx)?;
        let query = arguments.get("query").and_then(Value::as_str).unwrap_or_default().trim().to_owned();
        let limit = self.config.recall_limit;
        let search = |request: SearchRequest| async move {
            store.search(request).await.map_err(|err| ToolError::failed(format!("could not search memory: {err}")))
        };
        let ranked =
            search(SearchRequest::under(namespace.clone()).with_query(query.clone()).with_page(0, limit)).await?;
        // A query that matched nothing (or had no words to rank by) still answers with what
        // there is, so "what do you know about me?" works on any store.
        let (found, ranked) = if ranked.is_empty() {
            (search(SearchRequest::under(namespace).with_page(0, limit)).await?, false)
        } else {
            (ranked, true)
        };
        if found.is_empty() {
            return Ok(ToolOutput::Text("Nothing is remembered about this user yet.".to_owned()));
        }
        let lines: Vec<String> = found
            .iter()
            .map(|item| {
                let text = match &item.value {
                    Value::String(text) => text.clone(),
                    value => value.get("text").and_then(Value::as_str).map_or_else(|| value.to_string(), str::to_owned),
                };
                format!("- {text}")
            })
            .collect();
        let heading = if ranked {
            format!("Remembered about this user, most relevant first ({}):", found.len())
        } else {
            format!("Nothing matched `{query}`; what is remembered about this user ({}):", found.len())
        };
        Ok(ToolOutput::Text(format!("{heading}\n{}", lines.join("\n"))))
    }
}

/// `topic` as a key part: lowercase letters and digits, other runs of characters as one `_`,
/// at most 64 characters.
fn topic_key(topic: &str) -> String {
    let mut key = String::new();
    for c in topic.trim().chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            key.push(c);
        } else if !key.is_empty() && !key.ends_with('_') {
            key.push('_');
        }
    }
    let key: String = key.trim_end_matches('_').chars().take(MAX_TOPIC_LEN).collect();
    key.trim_end_matches('_').to_owned()
}

/// 64-bit FNV-1a: the same text gives the same key in every build, so remembering a fact twice
/// keeps one item.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_become_stable_keys() {
        assert_eq!(topic_key("Seat preference"), "seat_preference");
        assert_eq!(topic_key("  --Meals & Diet!! "), "meals_diet");
        assert_eq!(topic_key("???"), "");
        assert_eq!(topic_key(&"x".repeat(100)).len(), MAX_TOPIC_LEN);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c, "FNV-1a's published test vector");
    }

    #[test]
    fn the_specs_are_what_the_model_sees() {
        let tools = MemoryTools::new().add_to(ToolSet::new()).unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
        assert_eq!(names, [REMEMBER_TOOL, RECALL_TOOL]);
        assert!(MemoryTools::new().add_to(tools).is_err(), "the names are taken");
        assert_eq!(MemoryTools::new().with_recall_limit(0).recall_limit, 1);
    }
}

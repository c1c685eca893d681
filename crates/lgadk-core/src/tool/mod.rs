//! Tools: what an agent can call, the context a call gets, typed tools from async functions,
//! tool sets, and the records of approvals and unfinished tool batches kept in a run's state.
//!
//! A [`Tool`] has a [`ToolSpec`] (name, description, JSON Schema of its arguments) and an async
//! [`call`](Tool::call) that gets the arguments and a [`ToolContext`]. A tool's failure is a
//! [`ToolError`]: the tool loop turns it into a result the model reads, so a model can correct
//! its arguments or try something else. [`FunctionTool`] makes a tool of an async function
//! whose argument struct derives `Deserialize` and `schemars::JsonSchema`:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lgadk_core::Result<()> {
//! use lgadk_core::serde_json::json;
//! use lgadk_core::tool::{FunctionTool, Tool, ToolContext, ToolError, ToolSet};
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Add {
//!     /// The first term.
//!     a: i64,
//!     /// The second term.
//!     b: i64,
//! }
//!
//! let add = FunctionTool::new("add", "Adds two integers.", |args: Add, _ctx| async move {
//!     args.a.checked_add(args.b).map(|sum| sum.to_string()).ok_or("the sum overflows")
//! });
//! let tools = ToolSet::new().with(add)?;
//!
//! let sum = tools.call("add", json!({"a": 2, "b": 40}), ToolContext::new("call-1")).await;
//! assert_eq!(sum.map(|out| out.into_content()), Ok("42".to_owned()));
//!
//! let bad = tools.call("add", json!({"a": 2, "b": "forty"}), ToolContext::new("call-2")).await;
//! assert!(matches!(bad, Err(ToolError::InvalidArguments { field: Some(ref f), .. }) if f == "b"));
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::{AgentEvent, EventSink, RunContext};
use crate::cancel::CancelToken;
use crate::error::{Error, Result};
use crate::id::{SessionId, UserId};
use crate::memory::MemoryStore;
use crate::model::ToolSpec;
use crate::session::Metadata;

mod approval;
mod function;

pub use approval::{ApprovalDecision, ApprovalDecisions, ApprovalRequest, PendingApproval, ToolBatch};
pub use function::{FunctionTool, schema_for};

/// What a tool returns: text, or JSON that is serialized for the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolOutput {
    /// Text, given to the model as it is.
    Text(String),
    /// A JSON value, given to the model serialized.
    Json(Value),
}

impl ToolOutput {
    /// A JSON output from any serializable value.
    ///
    /// # Errors
    /// [`ToolError::Failed`] when `value` does not serialize.
    pub fn json(value: &impl Serialize) -> std::result::Result<Self, ToolError> {
        serde_json::to_value(value).map(Self::Json).map_err(ToolError::failed)
    }

    /// The text the model reads: the text itself, or the JSON serialized.
    pub fn into_content(self) -> String {
        match self {
            Self::Text(text) => text,
            Self::Json(Value::String(text)) => text,
            Self::Json(value) => value.to_string(),
        }
    }
}

impl From<String> for ToolOutput {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for ToolOutput {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<Value> for ToolOutput {
    fn from(value: Value) -> Self {
        Self::Json(value)
    }
}

/// Why a tool call did not produce an output. The tool loop gives the model this error's text
/// as the call's result (unless it runs fail-fast), so each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The model named a tool the agent does not have.
    #[error("there is no tool named `{name}`; the tools are: {available}")]
    UnknownTool {
        /// The name the model used.
        name: String,
        /// The names of the tools there are, comma-separated.
        available: String,
    },
    /// The arguments do not fit the tool's schema.
    #[error("invalid arguments for `{tool}`{}: {reason}", DisplayField(field.as_deref()))]
    InvalidArguments {
        /// The tool.
        tool: String,
        /// The offending field, as a path (`to`, `items[2].name`), when one can be named.
        field: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// The tool ran and failed; `message` is its own explanation.
    #[error("{message}")]
    Failed {
        /// What went wrong, for the model.
        message: String,
    },
    /// The tool did not finish within the loop's timeout.
    #[error("the tool did not finish within {after:?}")]
    Timeout {
        /// The timeout.
        after: Duration,
    },
    /// The tool panicked; the panic was caught.
    #[error("the tool failed unexpectedly (it panicked: {message})")]
    Panicked {
        /// The panic's message, when it had one.
        message: String,
    },
    /// The run was cancelled while the tool ran.
    #[error("the run was cancelled")]
    Cancelled,
    /// A reviewer rejected the call.
    #[error("a reviewer rejected this call: {reason}")]
    Rejected {
        /// The reviewer's reason.
        reason: String,
    },
    /// The call never ran: the conversation went on before it was approved.
    #[error("this call was not run: {reason}")]
    NotRun {
        /// Why.
        reason: String,
    },
}

struct DisplayField<'a>(Option<&'a str>);

impl fmt::Display for DisplayField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(field) => write!(f, " (field `{field}`)"),
            None => Ok(()),
        }
    }
}

impl ToolError {
    /// A [`ToolError::Failed`] with `message`.
    pub fn failed(message: impl fmt::Display) -> Self {
        Self::Failed { message: message.to_string() }
    }
}

/// What a tool call knows: which call it is, the run's session, user, metadata and long-term
/// memory store, the run's cancellation, and where to report progress. Cheap to clone.
#[derive(Clone)]
pub struct ToolContext {
    call_id: Arc<str>,
    node: Arc<str>,
    session_id: Option<SessionId>,
    user_id: Option<UserId>,
    metadata: Arc<Metadata>,
    memory: Option<Arc<dyn MemoryStore>>,
    cancel: CancelToken,
    events: Option<Arc<dyn EventSink>>,
}

impl fmt::Debug for ToolContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolContext")
            .field("call_id", &self.call_id)
            .field("node", &self.node)
            .field("session_id", &self.session_id)
            .field("user_id", &self.user_id)
            .field("memory", &self.memory.as_ref().map(|store| store.backend()))
            .field("cancelled", &self.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl ToolContext {
    /// A context for call `call_id` outside any run: no session, user, metadata or memory
    /// store, never cancelled, events go nowhere. For calling tools directly and in tests.
    pub fn new(call_id: impl Into<String>) -> Self {
        Self {
            call_id: Arc::from(call_id.into()),
            node: Arc::from(""),
            session_id: None,
            user_id: None,
            metadata: Arc::default(),
            memory: None,
            cancel: CancelToken::new(),
            events: None,
        }
    }

    /// The context of call `call_id` made by `node` during the run `run`: its session, user,
    /// metadata, cancellation and event sink.
    pub fn for_run(run: &RunContext, node: &str, call_id: &str) -> Self {
        Self {
            call_id: Arc::from(call_id),
            node: Arc::from(node),
            session_id: run.session_id().cloned(),
            user_id: run.user_id().cloned(),
            metadata: run.shared_metadata(),
            memory: run.memory().cloned(),
            cancel: run.cancel_token().clone(),
            events: run.event_sink(),
        }
    }

    /// This context with `user` as the run's user (for calling tools directly and in tests).
    #[must_use]
    pub fn with_user(mut self, user: UserId) -> Self {
        self.user_id = Some(user);
        self
    }

    /// This context with the long-term memory `store` (for calling tools directly and in tests).
    #[must_use]
    pub fn with_memory(mut self, store: Arc<dyn MemoryStore>) -> Self {
        self.memory = Some(store);
        self
    }

    /// The call's id, as the model gave it.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The node that made the call.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The run's session.
    pub fn session_id(&self) -> Option<&SessionId> {
        self.session_id.as_ref()
    }

    /// The run's user.
    pub fn user_id(&self) -> Option<&UserId> {
        self.user_id.as_ref()
    }

    /// The session's metadata (with the run request's merged in).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The run's long-term memory store, when the graph has one. It holds every user's items:
    /// scope what the tool reads and writes to [`user_id`](Self::user_id).
    pub fn memory(&self) -> Option<&Arc<dyn MemoryStore>> {
        self.memory.as_ref()
    }

    /// The run's cancellation: long tools check it or race against
    /// [`cancelled`](CancelToken::cancelled). The tool loop drops a running tool's future when
    /// the run is cancelled.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    /// Reports progress to a streaming caller as a [`AgentEvent::Custom`] event named `name`.
    pub fn emit(&self, name: impl Into<String>, data: Value) {
        if let Some(sink) = &self.events {
            sink.emit(AgentEvent::Custom { node: self.node.to_string(), name: name.into(), data });
        }
    }
}

/// Something an agent can call.
///
/// The object-safe contract behind `Arc<dyn Tool>`; [`FunctionTool`] implements it for an
/// async function with typed arguments.
///
/// # Contract
/// - [`spec`](Self::spec)'s `parameters` is the JSON Schema of the arguments `call` accepts;
///   the tool loop checks arguments against its top level (an object, required fields present,
///   declared primitive types) before calling, and `call` checks the rest.
/// - `call` may run concurrently with other calls of the same tool, and may be dropped before
///   it finishes (a timeout, a cancelled run): keep side effects safe to interrupt.
/// - A tool that [`requires_approval`](Self::requires_approval) never runs without a
///   reviewer's decision.
#[async_trait]
pub trait Tool: Send + Sync + 'static {
    /// Name, description and argument schema, as the model sees them.
    fn spec(&self) -> &ToolSpec;

    /// The tool's name.
    fn name(&self) -> &str {
        &self.spec().name
    }

    /// Whether each call waits for a reviewer's approval. Default `false`.
    fn requires_approval(&self) -> bool {
        false
    }

    /// Runs the tool with `arguments` (a JSON object).
    ///
    /// # Errors
    /// A [`ToolError`] the model reads: [`ToolError::InvalidArguments`] for arguments that do
    /// not fit, [`ToolError::Failed`] for anything else.
    async fn call(&self, arguments: Value, ctx: ToolContext) -> std::result::Result<ToolOutput, ToolError>;
}

#[async_trait]
impl<T: Tool + ?Sized> Tool for Arc<T> {
    fn spec(&self) -> &ToolSpec {
        (**self).spec()
    }
    fn name(&self) -> &str {
        (**self).name()
    }
    fn requires_approval(&self) -> bool {
        (**self).requires_approval()
    }
    async fn call(&self, arguments: Value, ctx: ToolContext) -> std::result::Result<ToolOutput, ToolError> {
        (**self).call(arguments, ctx).await
    }
}

/// Checks `arguments` against the top level of `schema`: an object when the schema says so,
/// every required field present, and each present field of the declared primitive type.
/// Deeper checks are the tool's.
///
/// # Errors
/// [`ToolError::InvalidArguments`] naming the first field that does not fit.
pub fn check_arguments(tool: &str, schema: &Value, arguments: &Value) -> std::result::Result<(), ToolError> {
    let invalid = |field: Option<&str>, reason: String| ToolError::InvalidArguments {
        tool: tool.to_owned(),
        field: field.map(str::to_owned),
        reason,
    };
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Ok(());
    }
    let Some(args) = arguments.as_object() else {
        return Err(invalid(None, format!("expected a JSON object, got {}", kind(arguments))));
    };
    for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        if let Some(name) = required.as_str()
            && !args.contains_key(name)
        {
            return Err(invalid(Some(name), "the field is required".to_owned()));
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    for (name, value) in args {
        let declared = properties.and_then(|p| p.get(name));
        if declared.is_none() && schema.get("additionalProperties") == Some(&Value::Bool(false)) {
            return Err(invalid(Some(name), "no such field".to_owned()));
        }
        // No allocation unless the field does not fit.
        let declared_types = match declared.and_then(|d| d.get("type")) {
            Some(single @ Value::String(_)) => std::slice::from_ref(single),
            Some(Value::Array(ts)) => ts.as_slice(),
            _ => continue,
        };
        if !declared_types.iter().filter_map(Value::as_str).any(|t| fits(t, value)) {
            let types: Vec<&str> = declared_types.iter().filter_map(Value::as_str).collect();
            return Err(invalid(Some(name), format!("expected {}, got {}", types.join(" or "), kind(value))));
        }
    }
    Ok(())
}

fn fits(declared: &str, value: &Value) -> bool {
    match declared {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        _ => true,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The tools an agent may call, by name. Cheap to clone (tools are shared).
#[derive(Clone, Default)]
pub struct ToolSet {
    tools: Vec<Arc<dyn Tool>>,
    index: HashMap<String, usize>,
}

impl fmt::Debug for ToolSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.tools.iter().map(|t| t.name())).finish()
    }
}

impl ToolSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// This set with `tool` added.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the name is taken or is not 1–64 ASCII letters, digits,
    /// `_` or `-` (what chat-completions APIs accept).
    pub fn with(self, tool: impl Tool) -> Result<Self> {
        self.with_shared(Arc::new(tool))
    }

    /// This set with a tool shared with other sets added; errors as [`with`](Self::with).
    ///
    /// # Errors
    /// As [`with`](Self::with).
    pub fn with_shared(mut self, tool: Arc<dyn Tool>) -> Result<Self> {
        self.insert(tool)?;
        Ok(self)
    }

    /// Adds `tool`; errors as [`with`](Self::with).
    ///
    /// # Errors
    /// As [`with`](Self::with).
    pub fn insert(&mut self, tool: Arc<dyn Tool>) -> Result<()> {
        let name = tool.name().to_owned();
        let valid =
            (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            let reason = format!("tool name `{name}` must be 1 to 64 ASCII letters, digits, `_` or `-`");
            return Err(Error::InvalidConfig { reason });
        }
        if self.index.contains_key(&name) {
            return Err(Error::InvalidConfig { reason: format!("two tools are named `{name}`") });
        }
        self.index.insert(name, self.tools.len());
        self.tools.push(tool);
        Ok(())
    }

    /// The tool named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.index.get(name).map(|&i| &self.tools[i])
    }

    /// The tools, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Tool>> {
        self.tools.iter()
    }

    /// How many tools there are.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// The specs to send to a model, in order.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(|t| t.spec().clone()).collect()
    }

    /// Looks `name` up and checks `arguments` against its schema's top level: the tool to call.
    ///
    /// # Errors
    /// [`ToolError::UnknownTool`], [`ToolError::InvalidArguments`].
    pub fn resolve(&self, name: &str, arguments: &Value) -> std::result::Result<&Arc<dyn Tool>, ToolError> {
        let Some(tool) = self.get(name) else {
            let available = self.tools.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ");
            return Err(ToolError::UnknownTool { name: name.to_owned(), available });
        };
        check_arguments(name, &tool.spec().parameters, arguments)?;
        Ok(tool)
    }

    /// Resolves and calls the tool `name`: no timeout, no approval check (the tool loop adds
    /// both).
    ///
    /// # Errors
    /// As [`resolve`](Self::resolve), then the tool's own error.
    pub async fn call(
        &self,
        name: &str,
        arguments: Value,
        ctx: ToolContext,
    ) -> std::result::Result<ToolOutput, ToolError> {
        let tool = self.resolve(name, &arguments)?;
        tool.call(arguments, ctx).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    struct Note {
        /// Title of the note.
        title: String,
        tags: Vec<String>,
        #[serde(default)]
        pinned: bool,
    }

    fn note_tool() -> FunctionTool {
        FunctionTool::new("note", "Writes a note.", |n: Note, _| async move {
            Ok::<_, String>(format!("{} [{}] {}", n.title, n.tags.join(","), n.pinned))
        })
    }

    #[test]
    fn the_schema_comes_from_the_argument_type() {
        let spec = note_tool().spec().clone();
        assert_eq!(spec.parameters["type"], "object");
        assert_eq!(spec.parameters["properties"]["title"]["description"], "Title of the note.");
        assert_eq!(spec.parameters["required"], json!(["title", "tags"]));
        assert!(spec.parameters.get("$schema").is_none());
    }

    #[tokio::test]
    async fn arguments_that_do_not_deserialize_name_the_field() {
        let tool = note_tool();
        let call = |args| tool.call(args, ToolContext::new("c"));
        let wrong_type = call(json!({"title": "t", "tags": ["a", 3]})).await.unwrap_err();
        let ToolError::InvalidArguments { field, reason, .. } = &wrong_type else { panic!("{wrong_type:?}") };
        assert_eq!(field.as_deref(), Some("tags[1]"));
        assert!(reason.contains("expected a string"), "{reason}");
        assert!(wrong_type.to_string().contains("field `tags[1]`"), "{wrong_type}");
        let missing = call(json!({"tags": []})).await.unwrap_err();
        assert!(matches!(missing, ToolError::InvalidArguments { field: Some(ref f), .. } if f == "title"));
        let ok = call(json!({"title": "t", "tags": ["a"]})).await.unwrap();
        assert_eq!(ok.into_content(), "t [a] false");
    }

    #[tokio::test]
    async fn a_set_resolves_names_and_checks_the_top_level_schema() {
        let tools = ToolSet::new().with(note_tool()).unwrap();
        let unknown = tools.call("notes", json!({}), ToolContext::new("c")).await.unwrap_err();
        assert_eq!(unknown, ToolError::UnknownTool { name: "notes".into(), available: "note".into() });
        let not_object = tools.resolve("note", &json!([1])).err().unwrap();
        assert!(matches!(not_object, ToolError::InvalidArguments { field: None, .. }));
        let wrong = tools.resolve("note", &json!({"title": 1, "tags": []})).err().unwrap();
        assert!(matches!(wrong, ToolError::InvalidArguments { field: Some(ref f), .. } if f == "title"));
        assert!(tools.clone().with(note_tool()).is_err(), "duplicate names are refused");
        let bad_name = FunctionTool::new("no spaces", "", |n: Note, _| async move { Ok::<_, String>(n.title) });
        assert!(ToolSet::new().with(bad_name).is_err());
    }

    #[test]
    fn decisions_and_requests_round_trip_through_json() {
        let value = ApprovalDecisions::new().edit("c1", json!({"x": 1})).approve("c2").into_value();
        let back: ApprovalDecisions = serde_json::from_value(value).unwrap();
        assert_eq!(back.0["c1"], ApprovalDecision::Edit { arguments: json!({"x": 1}) });
        let request = ApprovalRequest {
            pending: vec![PendingApproval { call_id: "c1".into(), name: "send".into(), arguments: json!({}) }],
        };
        let value = serde_json::to_value(&request).unwrap();
        assert_eq!(value["type"], "tool_approval");
        let err = Error::Interrupted { node: "tools".into(), session_id: None, value: Some(value) };
        assert_eq!(ApprovalRequest::from_interrupt(&err), Some(request));
    }
}

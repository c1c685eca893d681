//! [`FunctionTool`]: a tool made of an async function with typed arguments.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Tool, ToolContext, ToolError, ToolOutput};
use crate::model::ToolSpec;

type ToolFuture = Pin<Box<dyn Future<Output = std::result::Result<ToolOutput, ToolError>> + Send + 'static>>;
type ToolFn = Arc<dyn Fn(Value, ToolContext) -> ToolFuture + Send + Sync>;

/// A tool made of an async function whose argument type derives `Deserialize` and
/// `schemars::JsonSchema`: the schema is generated from the type (doc comments become field
/// descriptions), and arguments that do not deserialize become
/// [`ToolError::InvalidArguments`] naming the field. See the [`tool` module docs](crate::tool) for an example.
#[derive(Clone)]
pub struct FunctionTool {
    spec: ToolSpec,
    approval: bool,
    call: ToolFn,
}

impl fmt::Debug for FunctionTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionTool").field("spec", &self.spec).field("approval", &self.approval).finish()
    }
}

impl FunctionTool {
    /// A tool named `name` that deserializes its arguments into `A` and calls `f`.
    ///
    /// `f` returns anything that converts into a [`ToolOutput`] (text, a JSON value) or an
    /// error whose text the model reads.
    pub fn new<A, F, Fut, O, E>(name: impl Into<String>, description: impl Into<String>, f: F) -> Self
    where
        A: DeserializeOwned + schemars::JsonSchema + Send + 'static,
        F: Fn(A, ToolContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<O, E>> + Send + 'static,
        O: Into<ToolOutput>,
        E: fmt::Display,
    {
        let name = name.into();
        let spec = ToolSpec::new(name.clone(), description, schema_for::<A>());
        let f = Arc::new(f);
        let call: ToolFn = Arc::new(move |arguments, ctx| {
            let args = parse_arguments::<A>(&name, arguments);
            let f = Arc::clone(&f);
            Box::pin(async move {
                let out = f(args?, ctx).await;
                out.map(Into::into).map_err(ToolError::failed)
            })
        });
        Self { spec, approval: false, call }
    }

    /// Makes every call wait for a reviewer's approval.
    #[must_use]
    pub fn requiring_approval(mut self) -> Self {
        self.approval = true;
        self
    }

    /// Words that, in a user's message, make the offline model call this tool (see
    /// [`ToolSpec::keywords`]).
    #[must_use]
    pub fn with_keywords<I: IntoIterator<Item = S>, S: Into<String>>(mut self, keywords: I) -> Self {
        self.spec.keywords = keywords.into_iter().map(Into::into).collect();
        self
    }

    /// Declares the schema strict ([`ToolSpec::strict`]).
    #[must_use]
    pub fn strict(mut self) -> Self {
        self.spec = self.spec.strict();
        self
    }
}

#[async_trait]
impl Tool for FunctionTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn requires_approval(&self) -> bool {
        self.approval
    }

    async fn call(&self, arguments: Value, ctx: ToolContext) -> std::result::Result<ToolOutput, ToolError> {
        (self.call)(arguments, ctx).await
    }
}

/// The JSON Schema of `A`, inlined (no `$defs` unless `A` is recursive), without `$schema`
/// and `title`, as chat-completions APIs take it.
pub fn schema_for<A: schemars::JsonSchema>() -> Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
    });
    let mut schema = settings.into_generator().into_root_schema_for::<A>().to_value();
    if let Value::Object(map) = &mut schema {
        map.remove("title");
    }
    schema
}

/// Deserializes a tool's arguments, naming the offending field on failure.
fn parse_arguments<A: DeserializeOwned>(tool: &str, arguments: Value) -> std::result::Result<A, ToolError> {
    serde_path_to_error::deserialize(arguments).map_err(|err| {
        let path = err.path().to_string();
        let field = (path != ".").then_some(path);
        let inner = err.into_inner().to_string();
        // serde_json appends a position that means nothing for a value already parsed.
        let reason = match inner.find(" at line ") {
            Some(at) => inner[..at].to_owned(),
            None => inner,
        };
        let field = field.or_else(|| missing_field(&reason));
        ToolError::InvalidArguments { tool: tool.to_owned(), field, reason }
    })
}

/// The field a "missing field `x`" message names.
fn missing_field(reason: &str) -> Option<String> {
    let rest = reason.strip_prefix("missing field `")?;
    rest.find('`').map(|end| rest[..end].to_owned())
}

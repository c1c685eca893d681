//! Model providers for lgadk: OpenAI-compatible servers, an offline model, a registry, and an agent.
//!
//! Everything here implements or uses [`ChatModel`](lgadk_core::ChatModel) from `lgadk-core`.
//! [`OpenAiModel`] talks to OpenAI and to any OpenAI-compatible server (Ollama, vLLM, LM Studio,
//! llama.cpp) with streaming, tool calls (`tool_choice`, parallel calls, strict schemas),
//! timeouts and retries; [`OfflineModel`] answers deterministically without a network, and
//! calls tools by a [documented rule](OfflineModel#tools), for first demos, CI and scripted
//! tests; [`get_model`]
//! turns `"openai/gpt-4o-mini"`, `"ollama/llama3"` or `"offline"` into a model; and
//! [`ChatAgent`] is the graph node that sends a conversation to a model, records the reply and
//! the token usage. [`PromptTemplate`] fills `{placeholders}`; [`tokens`] counts tokens with a
//! real tokenizer when a provider reports none.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lgadk_core::Result<()> {
//! use lgadk_core::{Agent, ChatState, GraphState, RunContext};
//! use lgadk_llm::{ChatAgent, get_model};
//!
//! let agent = ChatAgent::new("assistant", get_model("offline")?).with_system_prompt("You are a helpful assistant.");
//! let mut state = ChatState::default();
//! let ctx = RunContext::default();
//!
//! state.begin_turn("Hello! Can you tell me about machine learning?");
//! agent.call(&mut state, &ctx).await?;
//! assert!(state.output.starts_with("[offline model] Hello! You asked about machine learning."));
//!
//! state.begin_turn("Can you explain neural networks specifically?");
//! agent.call(&mut state, &ctx).await?;
//! assert!(state.output.contains("Earlier you asked about machine learning."));
//!
//! assert_eq!(state.messages.len(), 4); // two user turns, two replies
//! assert!(ctx.usage().prompt_tokens > 0 && ctx.usage().completion_tokens > 0);
//! # Ok(())
//! # }
//! ```
//!
//! # Model errors
//!
//! Every provider failure is an [`Error::Model`](lgadk_core::Error::Model) whose `kind`, a
//! [`ModelErrorKind`](lgadk_core::ModelErrorKind), says what went wrong whatever the server.
//! [`OpenAiModel`] reads it from the HTTP status, OpenAI's error `code`/`type`, and the wording
//! of the compatible servers (vLLM, Ollama, LM Studio, llama.cpp, LiteLLM). "Retried" is what
//! [`OpenAiModel`] does by itself under its [`RetryPolicy`]; `is_retryable()` says whether the
//! caller may usefully try again later.
//!
//! | kind | from | retried | `is_retryable()` |
//! |---|---|---|---|
//! | `Connect` | refused, DNS, TLS, connect timeout: the request was never sent | yes | yes |
//! | `RateLimited { retry_after }` | 429, `rate_limit_exceeded` | yes, after `Retry-After` | yes |
//! | `ServerError` | 5xx, 529 overloaded, an error object in a stream | yes (not mid-stream) | yes |
//! | `ConnectionLost` | the connection broke after the request was sent | only with [`RetryPolicy::with_retry_after_send`] | yes |
//! | `Timeout` | no answer, or no next chunk, within the timeout; 408 | no (it bounds the caller's wait) | yes |
//! | `StreamCut` | a stream broke off or ended before the model finished | no | yes |
//! | `Quota` | `insufficient_quota`, 402 | no | no |
//! | `Authentication` | 401, 403, `invalid_api_key` | no | no |
//! | `ContextWindowExceeded` | `context_length_exceeded`, `exceed_context_size_error`, "maximum context length", "exceeds the context length", "prompt is too long", … | no | no |
//! | `ContentFiltered` | `content_filter` (error code or finish reason), `content_policy_violation` | no | no |
//! | `InvalidRequest` | any other 4xx | no | no |
//! | `MalformedResponse` | an answer that is not a completion or has no choices (tool-call arguments that are not JSON are kept as text, not failed: see [`OpenAiModel`]) | no | no |
//! | `Other` | the HTTP client could not be built; an exhausted [`OfflineModel`] script | no | no |
//!
//! The provider's own error (status, message, transport error) stays the `source`.
//!
//! # Feature flags
//! | feature | default | adds |
//! |---|---|---|
//! | `openai` | yes | [`OpenAiModel`] and [`RetryPolicy`] (async-openai, reqwest, rustls with `ring`); the `openai/…` and `ollama/…` registry providers |

#![cfg_attr(docsrs, feature(doc_cfg))]

mod agent;
mod offline;
#[cfg(feature = "openai")]
#[cfg_attr(docsrs, doc(cfg(feature = "openai")))]
mod openai;
mod registry;
mod template;
pub mod tokens;
mod tool_choice;

#[doc(inline)]
pub use agent::ChatAgent;
#[doc(inline)]
pub use offline::{
    DEFAULT_LEXICAL_DIMENSIONS, LEXICAL_EMBEDDER_ID, LexicalEmbedder, OFFLINE_LABEL, OfflineModel, ScriptedReply,
};
#[cfg(feature = "openai")]
#[cfg_attr(docsrs, doc(cfg(feature = "openai")))]
#[doc(inline)]
pub use openai::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_EMBEDDING_BATCH, DEFAULT_TIMEOUT, OPENAI_BASE_URL, OpenAiEmbedder,
    OpenAiEmbedderBuilder, OpenAiModel, OpenAiModelBuilder, RetryPolicy,
};
#[doc(inline)]
pub use registry::{ModelRegistry, ModelSpec, OLLAMA_BASE_URL, ProviderFn, get_embedder, get_model, register_provider};
#[doc(inline)]
pub use template::PromptTemplate;

//! Conversions between lgadk's chat types and async-openai's wire types.

use std::collections::BTreeMap;

use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCallChunk, ChatCompletionMessageToolCalls,
    ChatCompletionNamedToolChoice, ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage, ChatCompletionRequestSystemMessageContent,
    ChatCompletionRequestToolMessage, ChatCompletionRequestToolMessageContent, ChatCompletionRequestUserMessage,
    ChatCompletionRequestUserMessageContent, ChatCompletionStreamOptions, ChatCompletionTool,
    ChatCompletionToolChoiceOption, ChatCompletionTools, CompletionUsage, CreateChatCompletionRequest,
    CreateChatCompletionResponse, FinishReason, FunctionCall, FunctionName, FunctionObject, ToolChoiceOptions,
};
use lgadk_core::{ChatRequest, Error, Message, Result, Role, ToolCall, ToolChoice, ToolSpec, Usage};

use super::failure::ProviderFailure;

/// Where the completion-length cap goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MaxTokensField {
    /// `max_completion_tokens`: OpenAI's current field (required by o-series models).
    Completion,
    /// `max_tokens`: the older field that every compatible server understands.
    Legacy,
}

/// The arguments as the wire carries them: a JSON text, written within lgadk's nesting limit
/// (a recursive writer would overflow the stack on arguments built deep in code).
fn arguments_text(arguments: &serde_json::Value) -> Result<String> {
    match arguments {
        serde_json::Value::String(raw) => Ok(raw.clone()),
        other => lgadk_core::json::to_string(other).map_err(|err| {
            err.into_error("a message", |source| Error::InvalidConfig {
                reason: format!("tool-call arguments do not serialize: {source}"),
            })
        }),
    }
}

fn to_wire_message(index: usize, message: &Message) -> Result<ChatCompletionRequestMessage> {
    let name = message.name.clone();
    Ok(match message.role {
        Role::System => ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
            content: ChatCompletionRequestSystemMessageContent::Text(message.content.clone()),
            name,
        }),
        Role::User => ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
            content: ChatCompletionRequestUserMessageContent::Text(message.content.clone()),
            name,
        }),
        Role::Assistant => {
            let tool_calls: Vec<ChatCompletionMessageToolCalls> = message
                .tool_calls
                .iter()
                .map(|call| {
                    Ok(ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                        id: call.id.clone(),
                        function: FunctionCall { name: call.name.clone(), arguments: arguments_text(&call.arguments)? },
                    }))
                })
                .collect::<Result<_>>()?;
            let content = (!message.content.is_empty() || tool_calls.is_empty())
                .then(|| ChatCompletionRequestAssistantMessageContent::Text(message.content.clone()));
            ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                content,
                name,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                ..ChatCompletionRequestAssistantMessage::default()
            })
        }
        Role::Tool => {
            let Some(tool_call_id) = message.tool_call_id.clone() else {
                return Err(Error::InvalidConfig {
                    reason: format!("message {index} has role `tool` but no `tool_call_id`"),
                });
            };
            ChatCompletionRequestMessage::Tool(ChatCompletionRequestToolMessage {
                content: ChatCompletionRequestToolMessageContent::Text(message.content.clone()),
                tool_call_id,
            })
        }
        other => {
            return Err(Error::InvalidConfig {
                reason: format!("message {index} has role {other:?}, which OpenAI-compatible servers do not accept"),
            });
        }
    })
}

/// A function definition. `strict` goes out only when set: `false` is the API's default, and
/// some compatible servers (vLLM among them) refuse a `strict` field they do not know. The
/// spec's `keywords` are for the offline model and never leave the process.
fn to_wire_tool(tool: &ToolSpec) -> ChatCompletionTools {
    ChatCompletionTools::Function(ChatCompletionTool {
        function: FunctionObject {
            name: tool.name.clone(),
            description: (!tool.description.is_empty()).then(|| tool.description.clone()),
            parameters: Some(tool.parameters.clone()),
            strict: tool.strict.then_some(true),
        },
    })
}

/// `tool_choice` as OpenAI spells it: `"auto"`, `"none"`, `"required"`, or
/// `{"type": "function", "function": {"name": …}}`.
fn to_wire_tool_choice(choice: &ToolChoice) -> Result<ChatCompletionToolChoiceOption> {
    Ok(match choice {
        ToolChoice::Auto => ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::Auto),
        ToolChoice::None => ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::None),
        ToolChoice::Required => ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::Required),
        ToolChoice::Tool(name) => ChatCompletionToolChoiceOption::Function(ChatCompletionNamedToolChoice {
            function: FunctionName { name: name.clone() },
        }),
        other => {
            return Err(Error::InvalidConfig {
                reason: format!("tool choice {other:?} is not supported by OpenAI-compatible servers"),
            });
        }
    })
}

/// The wire request for `request` on `model`; `stream` adds `stream_options.include_usage`.
pub(crate) fn to_wire_request(
    model: &str,
    request: &ChatRequest,
    stream: bool,
    max_tokens_field: MaxTokensField,
) -> Result<CreateChatCompletionRequest> {
    let messages =
        request.messages.iter().enumerate().map(|(i, m)| to_wire_message(i, m)).collect::<Result<Vec<_>>>()?;
    crate::tool_choice::check(request)?;
    // OpenAI refuses `tool_choice` and `parallel_tool_calls` in a request without tools; without
    // tools, `auto` and `none` mean the same as leaving them out (`check` refused the others).
    let with_tools = !request.tools.is_empty();
    let tools = with_tools.then(|| request.tools.iter().map(to_wire_tool).collect());
    let tool_choice = match request.tool_choice.as_ref().filter(|_| with_tools) {
        Some(choice) => Some(to_wire_tool_choice(choice)?),
        None => None,
    };
    let mut wire = CreateChatCompletionRequest {
        model: model.to_owned(),
        messages,
        temperature: request.temperature,
        tools,
        tool_choice,
        parallel_tool_calls: request.parallel_tool_calls.filter(|_| with_tools),
        stream_options: stream
            .then_some(ChatCompletionStreamOptions { include_usage: Some(true), include_obfuscation: None }),
        ..CreateChatCompletionRequest::default()
    };
    match max_tokens_field {
        MaxTokensField::Completion => wire.max_completion_tokens = request.max_tokens,
        #[expect(deprecated, reason = "`max_tokens` is what older OpenAI-compatible servers understand")]
        MaxTokensField::Legacy => wire.max_tokens = request.max_tokens,
    }
    Ok(wire)
}

/// The wire name of a finish reason.
pub(crate) fn finish_reason_name(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::FunctionCall => "function_call",
    }
}

pub(crate) fn to_usage(usage: &CompletionUsage) -> Usage {
    Usage::new(u64::from(usage.prompt_tokens), u64::from(usage.completion_tokens))
}

/// How many containers sit above a tool call's arguments in a logged message (message,
/// `tool_calls`, call), as [`lgadk_core::json::check_message`] counts them.
const LOGGED_ARGUMENTS_DEPTH: usize = 3;

/// Parses tool-call arguments.
///
/// - An empty string means "no arguments": `{}`.
/// - Text that is not JSON (a model that broke off, or wrote JSON-like prose), JSON nested
///   too deep to be logged with its message ([`lgadk_core::json::check_message`]), and a bare
///   JSON string are kept as [`Value::String`](serde_json::Value::String) holding the text
///   exactly as the model sent it. The call is not a failure of the whole completion: the
///   tool loop checks the arguments against the tool's schema and tells the model they are
///   not the object it asked for, so the model can try again; sent back in the conversation,
///   the text goes out unchanged.
fn parse_arguments(name: &str, raw: String) -> serde_json::Value {
    if raw.trim().is_empty() {
        return serde_json::Value::Object(serde_json::Map::new());
    }
    match serde_json::from_str::<serde_json::Value>(&raw) {
        Ok(serde_json::Value::String(_)) => serde_json::Value::String(raw),
        Ok(value) if lgadk_core::json::check_value(&value, LOGGED_ARGUMENTS_DEPTH).is_err() => {
            tracing::debug!(tool = name, "tool-call arguments nest too deep to be logged; kept as text");
            serde_json::Value::String(raw)
        }
        Ok(value) => value,
        Err(err) => {
            tracing::debug!(tool = name, error = %err, "tool-call arguments are not JSON; kept as text");
            serde_json::Value::String(raw)
        }
    }
}

fn from_wire_tool_call(call: ChatCompletionMessageToolCalls) -> ToolCall {
    match call {
        ChatCompletionMessageToolCalls::Function(call) => {
            let arguments = parse_arguments(&call.function.name, call.function.arguments);
            ToolCall { id: call.id, name: call.function.name, arguments }
        }
        // A custom (free-form) tool's input is not JSON: keep it as a string.
        ChatCompletionMessageToolCalls::Custom(call) => ToolCall {
            id: call.id,
            name: call.custom_tool.name,
            arguments: serde_json::Value::String(call.custom_tool.input),
        },
    }
}

/// The first choice of a completion: message, reported usage and finish reason.
pub(crate) fn from_wire_response(
    response: CreateChatCompletionResponse,
) -> Result<(Message, Option<Usage>, Option<String>), ProviderFailure> {
    let usage = response.usage.as_ref().map(to_usage);
    let Some(choice) = response.choices.into_iter().min_by_key(|c| c.index) else {
        return Err(ProviderFailure::NoChoices);
    };
    let content = choice.message.content.or(choice.message.refusal).unwrap_or_default();
    let tool_calls = choice.message.tool_calls.unwrap_or_default().into_iter().map(from_wire_tool_call).collect();
    let message = Message { tool_calls, ..Message::assistant(content) };
    Ok((message, usage, choice.finish_reason.map(|r| finish_reason_name(r).to_owned())))
}

/// Collects streamed tool-call fragments (by index) into whole calls.
///
/// OpenAI sends a call's id and name once, on its first fragment, then only argument pieces.
/// Several compatible servers (Fireworks, DeepSeek, Qwen, LiteLLM's proxy) repeat the id and
/// the name on every fragment, and at least one sends a different id after the first: so the
/// first id is kept, and a name is extended only by a piece that is not the name again.
#[derive(Debug, Default)]
pub(crate) struct ToolCallAssembler {
    calls: BTreeMap<u32, (String, String, String)>,
}

impl ToolCallAssembler {
    pub(crate) fn push(&mut self, fragment: ChatCompletionMessageToolCallChunk) {
        let (id, name, arguments) = self.calls.entry(fragment.index).or_default();
        if let Some(new_id) = fragment.id
            && id.is_empty()
        {
            *id = new_id;
        }
        if let Some(function) = fragment.function {
            if let Some(part) = function.name
                && part != *name
            {
                name.push_str(&part);
            }
            if let Some(part) = function.arguments {
                arguments.push_str(&part);
            }
        }
    }

    /// The assembled calls, in index order (arguments parsed as [`parse_arguments`] says); the
    /// assembler is empty afterwards.
    pub(crate) fn finish(&mut self) -> Vec<ToolCall> {
        std::mem::take(&mut self.calls)
            .into_values()
            .map(|(id, name, raw)| ToolCall { arguments: parse_arguments(&name, raw), id, name })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_carries_history_tools_and_options() {
        let history = vec![
            Message::system("sys"),
            Message::user("weather in Paris?"),
            Message {
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "weather".into(),
                    arguments: serde_json::json!({"city": "Paris"}),
                }],
                ..Message::assistant("")
            },
            Message::tool("c1", "sunny"),
        ];
        let tool = ToolSpec::new("weather", "Current weather", serde_json::json!({"type": "object"}));
        let request = ChatRequest::new(history).with_tools(vec![tool]).with_temperature(0.5).with_max_tokens(64);
        let wire =
            serde_json::to_value(to_wire_request("m", &request, true, MaxTokensField::Completion).unwrap()).unwrap();
        assert_eq!(wire["messages"][2]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert!(wire["messages"][2].get("content").is_none());
        assert_eq!(wire["messages"][3], serde_json::json!({"role": "tool", "content": "sunny", "tool_call_id": "c1"}));
        assert_eq!(wire["tools"][0]["function"]["name"], "weather");
        assert_eq!(wire["stream_options"]["include_usage"], true);
        assert_eq!(wire["max_completion_tokens"], 64);
        assert!(wire.get("max_tokens").is_none());
        let legacy =
            serde_json::to_value(to_wire_request("m", &request, false, MaxTokensField::Legacy).unwrap()).unwrap();
        assert_eq!(legacy["max_tokens"], 64);
        assert!(legacy.get("stream_options").is_none());
    }

    #[test]
    fn tool_arguments_nested_too_deep_are_refused_not_overflowed() {
        let deep = (0..100_000).fold(serde_json::Value::Null, |inner, _| serde_json::Value::Array(vec![inner]));
        let call = ToolCall { id: "c1".into(), name: "f".into(), arguments: deep };
        let request = ChatRequest::new(vec![Message { tool_calls: vec![call], ..Message::assistant("") }]);
        let err = to_wire_request("m", &request, false, MaxTokensField::Completion).unwrap_err();
        assert!(matches!(err, Error::NestingTooDeep { what: "a message", .. }), "{err}");
        // Taken apart without recursing, so the test's own drop cannot overflow either.
        for message in request.messages {
            message.tool_calls.into_iter().for_each(|call| lgadk_core::json::dispose(call.arguments));
        }
    }

    #[test]
    fn tool_message_without_id_is_rejected() {
        let request = ChatRequest::new(vec![Message { tool_call_id: None, ..Message::tool("x", "y") }]);
        let err = to_wire_request("m", &request, false, MaxTokensField::Completion).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    }

    #[test]
    fn fragments_assemble_in_index_order() {
        let mut assembler = ToolCallAssembler::default();
        let fragment = |index, id: Option<&str>, name: Option<&str>, args: Option<&str>| {
            serde_json::from_value::<ChatCompletionMessageToolCallChunk>(serde_json::json!({
                "index": index, "id": id, "function": {"name": name, "arguments": args}
            }))
            .unwrap()
        };
        assembler.push(fragment(1, Some("b"), Some("second"), Some("")));
        assembler.push(fragment(0, Some("a"), Some("first"), Some("{\"x\":")));
        assembler.push(fragment(0, None, None, Some("1}")));
        let calls = assembler.finish();
        assert_eq!(calls.len(), 2);
        assert_eq!((calls[0].id.as_str(), calls[0].name.as_str()), ("a", "first"));
        assert_eq!(calls[0].arguments, serde_json::json!({"x": 1}));
        assert_eq!(calls[1].arguments, serde_json::json!({}));
        // Fireworks-style: id and name repeated on every fragment.
        assembler.push(fragment(0, Some("r"), Some("repeat"), Some("{\"n\":")));
        assembler.push(fragment(0, Some("r"), Some("repeat"), Some("2}")));
        assembler.push(fragment(1, Some("s"), Some("split_"), None));
        assembler.push(fragment(1, Some("other"), Some("name"), None));
        let calls = assembler.finish();
        assert_eq!((calls[0].id.as_str(), calls[0].name.as_str()), ("r", "repeat"));
        assert_eq!(calls[0].arguments, serde_json::json!({"n": 2}));
        assert_eq!((calls[1].id.as_str(), calls[1].name.as_str()), ("s", "split_name"), "the first id is kept");
        assembler.push(fragment(0, Some("c"), Some("bad"), Some("{oops")));
        let calls = assembler.finish();
        assert_eq!(calls[0].arguments, serde_json::json!("{oops"), "kept as the text the model sent");
    }

    #[test]
    fn arguments_that_are_not_an_object_are_kept_as_sent_and_go_back_unchanged() {
        let parse = |raw: &str| parse_arguments("f", raw.to_owned());
        assert_eq!(parse(" "), serde_json::json!({}));
        assert_eq!(parse(r#"{"a": [1, {"b": null}]}"#), serde_json::json!({"a": [1, {"b": null}]}));
        assert_eq!(parse("[1, 2]"), serde_json::json!([1, 2]), "valid JSON stays JSON; the schema check judges it");
        for raw in [r#"{"city": "Par"#, "city=Paris", r#""Paris""#, &format!("{}{}", "[".repeat(200), "]".repeat(200))]
        {
            let value = parse(raw);
            assert_eq!(value, serde_json::Value::String(raw.to_owned()));
            assert_eq!(arguments_text(&value).unwrap(), raw, "round-trips byte for byte");
        }
        // Readable by serde_json, but too deep to log inside its message: text too.
        let deep = format!("{}{}", "[".repeat(126), "]".repeat(126));
        assert!(serde_json::from_str::<serde_json::Value>(&deep).is_ok());
        let call = ToolCall { id: "c".into(), name: "f".into(), arguments: parse(&deep) };
        assert_eq!(call.arguments, serde_json::Value::String(deep));
        assert!(lgadk_core::json::check_message(&Message { tool_calls: vec![call], ..Message::assistant("") }).is_ok());
        let fits = format!("{}{}", "[".repeat(124), "]".repeat(124));
        assert!(parse(&fits).is_array(), "the deepest arguments a log holds stay JSON");
    }

    fn tools_request() -> ChatRequest {
        let plain = ToolSpec::new("lookup", "", serde_json::json!({"type": "object"})).with_keywords(["find"]);
        let strict = ToolSpec::new(
            "note",
            "Writes a note",
            serde_json::json!({"type": "object", "properties": {"text": {"type": "string"}}}),
        )
        .strict();
        ChatRequest::new(vec![Message::user("hi")]).with_tools(vec![plain, strict])
    }

    fn wire(request: &ChatRequest) -> serde_json::Value {
        serde_json::to_value(to_wire_request("m", request, false, MaxTokensField::Completion).unwrap()).unwrap()
    }

    #[test]
    fn tool_choice_is_spelled_as_openai_documents() {
        let cases = [
            (ToolChoice::Auto, serde_json::json!("auto")),
            (ToolChoice::None, serde_json::json!("none")),
            (ToolChoice::Required, serde_json::json!("required")),
            (ToolChoice::Tool("note".into()), serde_json::json!({"type": "function", "function": {"name": "note"}})),
        ];
        for (choice, expected) in cases {
            assert_eq!(wire(&tools_request().with_tool_choice(choice))["tool_choice"], expected);
        }
        let defaults = wire(&tools_request());
        assert!(defaults.get("tool_choice").is_none() && defaults.get("parallel_tool_calls").is_none(), "{defaults}");
        assert_eq!(wire(&tools_request().with_parallel_tool_calls(false))["parallel_tool_calls"], false);
        assert_eq!(wire(&tools_request().with_parallel_tool_calls(true))["parallel_tool_calls"], true);
    }

    #[test]
    fn without_tools_the_tool_options_stay_off_the_wire() {
        let bare = ChatRequest::new(vec![Message::user("hi")]).with_parallel_tool_calls(false);
        for choice in [ToolChoice::Auto, ToolChoice::None] {
            let wire = wire(&bare.clone().with_tool_choice(choice));
            assert!(wire.get("tools").is_none() && wire.get("tool_choice").is_none(), "{wire}");
            assert!(wire.get("parallel_tool_calls").is_none(), "{wire}");
        }
        let err = to_wire_request("m", &bare.with_tool_choice(ToolChoice::Required), false, MaxTokensField::Completion)
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    }

    #[test]
    fn strict_goes_out_only_when_set_and_keywords_never() {
        let tools = wire(&tools_request())["tools"].clone();
        assert!(tools[0]["function"].get("strict").is_none(), "{tools}");
        assert_eq!(tools[1]["function"]["strict"], true);
        assert_eq!(tools[1]["function"]["parameters"]["additionalProperties"], false);
        assert_eq!(tools[1]["function"]["parameters"]["required"], serde_json::json!(["text"]));
        assert!(!tools.to_string().contains("keywords") && !tools.to_string().contains("find"), "{tools}");
    }
}

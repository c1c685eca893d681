//! What goes over the wire: lgadk messages as LangChain message dicts, graph states as
//! LangGraph `values`, run inputs read from LangGraph's request bodies, and JSON bodies
//! whose errors name the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use lgadk_core::{GraphState, Message, Role, SessionId, ToolCall, Usage};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// The id of the message at `index` of a thread's history: stable, since history only grows.
pub(crate) fn message_id(thread: &SessionId, index: usize) -> String {
    format!("{thread}:{index}")
}

/// One lgadk message as a LangChain message dict (`type` human/ai/tool/system).
pub(crate) fn message_to_langchain(message: &Message, id: &str, usage: Option<Usage>) -> Value {
    let kind = match message.role {
        Role::System => "system",
        Role::User => "human",
        Role::Assistant => "ai",
        Role::Tool => "tool",
        _ => "generic",
    };
    let mut dict = Map::new();
    dict.insert("type".into(), kind.into());
    dict.insert("content".into(), message.content.clone().into());
    dict.insert("id".into(), id.into());
    dict.insert("name".into(), message.name.clone().map_or(Value::Null, Value::from));
    dict.insert("additional_kwargs".into(), json!({}));
    dict.insert("response_metadata".into(), json!({}));
    match message.role {
        Role::Assistant => {
            let calls: Vec<Value> = message
                .tool_calls
                .iter()
                .map(|call| json!({"name": call.name, "args": call.arguments, "id": call.id, "type": "tool_call"}))
                .collect();
            dict.insert("tool_calls".into(), calls.into());
            dict.insert("invalid_tool_calls".into(), json!([]));
            let usage = usage.map_or(Value::Null, |usage| {
                json!({
                    "input_tokens": usage.prompt_tokens,
                    "output_tokens": usage.completion_tokens,
                    "total_tokens": usage.total(),
                })
            });
            dict.insert("usage_metadata".into(), usage);
        }
        Role::Tool => {
            dict.insert("tool_call_id".into(), message.tool_call_id.clone().map_or(Value::Null, Value::from));
            dict.insert("status".into(), "success".into());
        }
        _ => {}
    }
    Value::Object(dict)
}

/// A thread's messages from `from` on, as LangChain dicts.
pub(crate) fn messages_to_langchain(thread: &SessionId, messages: &[Message], from: usize) -> Vec<Value> {
    messages
        .iter()
        .enumerate()
        .skip(from)
        .map(|(index, message)| message_to_langchain(message, &message_id(thread, index), None))
        .collect()
}

/// A graph state as LangGraph `values`: the state's JSON with `messages` as LangChain dicts.
pub(crate) fn state_values<S: GraphState>(thread: &SessionId, state: &S) -> Value {
    let mut values = match serde_json::to_value(state) {
        Ok(Value::Object(map)) => map,
        Ok(other) => {
            let mut map = Map::new();
            map.insert("value".into(), other);
            map
        }
        // A state that saved as JSON serializes again; should it not, say so in the values.
        Err(err) => {
            let mut map = Map::new();
            map.insert("__error__".into(), json!({"error": "SerializationError", "message": err.to_string()}));
            map
        }
    };
    let messages = state.messages();
    if !messages.is_empty() || values.contains_key("messages") {
        values.insert("messages".into(), messages_to_langchain(thread, messages, 0).into());
    }
    Value::Object(values)
}

/// The user's text of a run's `input`: its last human message. LangGraph clients send
/// `{"messages": [{"role": "user", "content": "..."}]}` or LangChain dicts with `"type":
/// "human"`, with content as a string or a list of blocks (`{"type": "text", "text": "..."}`).
pub(crate) fn input_text(input: &Value) -> Result<String, ApiError> {
    let messages = match input {
        Value::Object(map) => match map.get("messages") {
            Some(Value::Array(messages)) => messages.as_slice(),
            Some(one @ (Value::Object(_) | Value::String(_))) => std::slice::from_ref(one),
            Some(_) => return Err(ApiError::invalid("input.messages", "expected a list of messages")),
            None => return Err(ApiError::invalid("input.messages", "missing: the run needs a user message")),
        },
        _ => return Err(ApiError::invalid("input", "expected an object with `messages`")),
    };
    for (index, message) in messages.iter().enumerate().rev() {
        let field = format!("input.messages[{index}]");
        let (role, content) = match message {
            Value::String(text) => return Ok(text.clone()),
            Value::Object(map) => (map.get("role").or_else(|| map.get("type")), map.get("content")),
            _ => return Err(ApiError::invalid(&field, "expected a message object")),
        };
        let is_user = matches!(role.and_then(Value::as_str), Some("user" | "human") | None);
        if !is_user {
            continue;
        }
        return content_text(content, &field);
    }
    Err(ApiError::invalid("input.messages", "no user message"))
}

/// The text of a message's `content`: a string, or a list of blocks whose `text` parts are
/// joined (`{"type": "text", "text": "..."}`, or plain strings).
fn content_text(content: Option<&Value>, field: &str) -> Result<String, ApiError> {
    match content {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(blocks)) => {
            let mut text = String::new();
            for block in blocks {
                match block {
                    Value::String(part) => text.push_str(part),
                    Value::Object(block) => {
                        if let Some(Value::String(part)) = block.get("text") {
                            text.push_str(part);
                        }
                    }
                    _ => return Err(ApiError::invalid(&format!("{field}.content"), "expected content blocks")),
                }
            }
            Ok(text)
        }
        _ => Err(ApiError::invalid(&format!("{field}.content"), "expected a string or a list of content blocks")),
    }
}

/// A message as clients send it, LangChain dict (`type`) or OpenAI shape (`role`): `human`/
/// `user`, `ai`/`assistant` (with `tool_calls` of `{name, args, id}`), `system`, `tool` (with
/// `tool_call_id`); a bare string is a user message. `field` names it in errors.
pub(crate) fn message_from_client(message: &Value, field: &str) -> Result<Message, ApiError> {
    let map = match message {
        Value::String(text) => return Ok(Message::user(text.clone())),
        Value::Object(map) => map,
        _ => return Err(ApiError::invalid(field, "expected a message object")),
    };
    let role = map.get("type").or_else(|| map.get("role")).and_then(Value::as_str).unwrap_or("human");
    let content = content_text(map.get("content"), field)?;
    let mut message = match role {
        "human" | "user" => Message::user(content),
        "system" => Message::system(content),
        "ai" | "assistant" => Message::assistant(content),
        "tool" => match map.get("tool_call_id").and_then(Value::as_str) {
            Some(call) => Message::tool(call, content),
            None => return Err(ApiError::invalid(&format!("{field}.tool_call_id"), "a tool message needs one")),
        },
        other => return Err(ApiError::invalid(&format!("{field}.type"), format!("unknown message type `{other}`"))),
    };
    if let Some(calls) = map.get("tool_calls").filter(|calls| !calls.is_null()) {
        let Value::Array(calls) = calls else {
            return Err(ApiError::invalid(&format!("{field}.tool_calls"), "expected a list"));
        };
        if message.role != Role::Assistant && !calls.is_empty() {
            return Err(ApiError::invalid(&format!("{field}.tool_calls"), "only an AI message makes tool calls"));
        }
        for (index, call) in calls.iter().enumerate() {
            let at = format!("{field}.tool_calls[{index}]");
            let text = |key: &str| call.get(key).and_then(Value::as_str).map(str::to_owned);
            let (Some(id), Some(name)) = (text("id"), text("name")) else {
                return Err(ApiError::invalid(&at, "a tool call needs an `id` and a `name`"));
            };
            let arguments = call.get("args").or_else(|| call.get("arguments")).cloned().unwrap_or(json!({}));
            message.tool_calls.push(ToolCall { id, name, arguments });
        }
    }
    if let Some(name) = map.get("name").and_then(Value::as_str) {
        message.name = Some(name.to_owned());
    }
    Ok(message)
}

/// What `POST /threads/{id}/state` asks for, checked before anything is read: `messages` to
/// append (LangGraph's messages reducer appends), and the state's other fields to replace.
#[derive(Debug, Default)]
pub(crate) struct ValuesUpdate {
    pub(crate) messages: Vec<Message>,
    pub(crate) fields: Map<String, Value>,
}

impl ValuesUpdate {
    /// Reads `values` (an object, or null for no change).
    pub(crate) fn parse(values: Option<&Value>) -> Result<Self, ApiError> {
        let mut update = Self::default();
        let map = match values {
            None | Some(Value::Null) => return Ok(update),
            Some(Value::Object(map)) => map,
            Some(_) => return Err(ApiError::invalid("values", "expected an object")),
        };
        for (key, value) in map {
            if key == "messages" {
                let list = match value {
                    Value::Array(list) => list.as_slice(),
                    one => std::slice::from_ref(one),
                };
                for (index, message) in list.iter().enumerate() {
                    update.messages.push(message_from_client(message, &format!("values.messages[{index}]"))?);
                }
            } else {
                update.fields.insert(key.clone(), value.clone());
            }
        }
        Ok(update)
    }

    /// Applies the update to `state`: the fields through the state's own JSON form (a field the
    /// state does not accept fails, naming it), then the messages appended.
    pub(crate) fn apply<S: GraphState>(self, state: &mut S) -> lgadk_core::Result<()> {
        if !self.fields.is_empty() {
            let messages = state.messages_mut().map(std::mem::take);
            let mut json = serde_json::to_value(&*state).map_err(|err| invalid_state("values", &err))?;
            let Value::Object(map) = &mut json else {
                return Err(lgadk_core::Error::InvalidConfig { reason: "the state is not a JSON object".into() });
            };
            for (key, value) in self.fields {
                if !map.contains_key(&key) {
                    return Err(lgadk_core::Error::InvalidConfig {
                        reason: format!("invalid `values.{key}`: the state has no such field"),
                    });
                }
                map.insert(key, value);
            }
            *state = serde_json::from_value(json).map_err(|err| invalid_state("values", &err))?;
            if let (Some(messages), Some(slot)) = (messages, state.messages_mut()) {
                *slot = messages;
            }
        }
        if !self.messages.is_empty() {
            let Some(history) = state.messages_mut() else {
                return Err(lgadk_core::Error::InvalidConfig {
                    reason: "invalid `values.messages`: this graph's state keeps no messages".into(),
                });
            };
            history.extend(self.messages);
        }
        Ok(())
    }
}

fn invalid_state(field: &str, err: &serde_json::Error) -> lgadk_core::Error {
    lgadk_core::Error::InvalidConfig { reason: format!("invalid `{field}`: {err}") }
}

/// A JSON request body whose errors are 422s naming the field (or saying where the JSON
/// breaks), 413 above the body limit, 400 for a body that could not be read.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned, St: Send + Sync> FromRequest<St> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &St) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Query parameters whose errors answer 422 with `{"detail": ...}` naming the parameter.
#[derive(Debug)]
pub(crate) struct Query<T>(pub(crate) T);

impl<T: DeserializeOwned, St: Send + Sync> FromRequestParts<St> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, rejection.body_text())),
        }
    }
}

/// Path parameters whose errors (text that is not UTF-8, say) answer with `{"detail": ...}`.
#[derive(Debug)]
pub(crate) struct Path<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, St: Send + Sync> FromRequestParts<St> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(rejection.status(), rejection.body_text())),
        }
    }
}

/// A boolean query flag as clients send it: `true`/`false`, `1`/`0`, `True`/`False`.
pub(crate) fn flag(field: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value.map(str::trim) {
        None | Some("" | "false" | "False" | "0") => Ok(false),
        Some("true" | "True" | "1") => Ok(true),
        Some(_) => Err(ApiError::invalid(field, "expected true or false")),
    }
}

/// Parses a body; an empty one reads as `{}` (the SDK sends no body for some POSTs).
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|err| json_error(&err.path().to_string(), &err.into_inner()))?;
    deserializer.end().map_err(|err| json_error(".", &err))?;
    Ok(value)
}

fn json_error(path: &str, err: &serde_json::Error) -> ApiError {
    if err.is_syntax() || err.is_eof() {
        ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, format!("the body is not valid JSON: {err}"))
    } else if path == "." {
        ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, format!("invalid body: {err}"))
    } else {
        ApiError::invalid(path, err)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failure is a panic")]

    use lgadk_core::ToolCall;
    use serde::Deserialize;

    use super::*;

    #[test]
    fn ai_message_with_tool_calls_becomes_a_langchain_dict() {
        let mut message = Message::assistant("");
        message.tool_calls.push(ToolCall {
            id: "c1".into(),
            name: "weather".into(),
            arguments: json!({"city": "Oslo"}),
        });
        let dict = message_to_langchain(&message, "t:1", Some(Usage::new(3, 4)));
        assert_eq!(dict["type"], "ai");
        assert_eq!(
            dict["tool_calls"][0],
            json!({"name": "weather", "args": {"city": "Oslo"}, "id": "c1", "type": "tool_call"})
        );
        assert_eq!(dict["usage_metadata"]["total_tokens"], 7);
        let tool = message_to_langchain(&Message::tool("c1", "sunny"), "t:2", None);
        assert_eq!((tool["type"].as_str(), tool["tool_call_id"].as_str()), (Some("tool"), Some("c1")));
    }

    #[test]
    fn input_text_takes_the_last_user_message_in_each_shape() {
        assert_eq!(input_text(&json!({"messages": [{"role": "user", "content": "hi"}]})).unwrap(), "hi");
        let lc = json!({"messages": [{"type": "human", "content": "a"}, {"type": "ai", "content": "b"}]});
        assert_eq!(input_text(&lc).unwrap(), "a");
        let blocks = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]}]});
        assert_eq!(input_text(&blocks).unwrap(), "xy");
        let err = input_text(&json!({"messages": 3})).unwrap_err();
        assert!(err.detail.contains("input.messages"), "{}", err.detail);
        assert!(input_text(&json!({})).unwrap_err().detail.contains("input.messages"));
        assert!(input_text(&json!([1])).is_err());
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code, reason = "only parsed")]
    struct Body {
        limit: Option<u32>,
    }

    #[test]
    fn bad_fields_and_bad_json_are_422_naming_the_field() {
        let err = parse_json::<Body>(br#"{"limit": "ten"}"#).unwrap_err();
        assert_eq!(err.status, 422);
        assert!(err.detail.contains("limit"), "{}", err.detail);
        assert_eq!(parse_json::<Body>(br#"{"limit": 1"#).unwrap_err().status, 422);
        assert_eq!(parse_json::<Body>(b"{} {}").unwrap_err().status, 422);
        assert!(parse_json::<Body>(b"").is_ok());
    }
}

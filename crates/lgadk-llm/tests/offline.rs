//! `OfflineModel`: deterministic conversational replies, tokenizer-counted usage, scripted mode.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests: a failure is a panic")]

use std::error::Error as _;

use futures_util::StreamExt;
use lgadk_core::{
    ChatChunk, ChatModel, ChatRequest, Error, Message, ModelErrorKind, ToolCall, ToolChoice, ToolSpec, Usage,
};
use lgadk_llm::{OfflineModel, ScriptedReply, tokens};
use serde_json::json;

const DEMO: [&str; 2] =
    ["Hello! Can you tell me about machine learning?", "Can you explain neural networks specifically?"];

async fn converse(model: &OfflineModel, turns: &[&str]) -> Vec<Message> {
    let mut messages = vec![Message::system("You are a helpful assistant.")];
    for turn in turns {
        messages.push(Message::user(*turn));
        let reply = model.chat(ChatRequest::new(messages.clone())).await.unwrap();
        messages.push(reply.message);
    }
    messages
}

#[tokio::test]
async fn same_conversation_same_reply() {
    let a = converse(&OfflineModel::new(), &DEMO).await;
    let b = converse(&OfflineModel::new(), &DEMO).await;
    assert_eq!(a, b);
    let other = converse(&OfflineModel::new(), &["Hi there! What's the weather like today?"]).await;
    assert_ne!(a[2], other[2]);
}

#[tokio::test]
async fn replies_are_labelled_answer_the_latest_turn_and_remember_earlier_ones() {
    let messages = converse(&OfflineModel::new(), &DEMO).await;
    let (first, second) = (&messages[2].content, &messages[4].content);
    assert!(first.starts_with("[offline model]") && first.contains("machine learning"), "{first}");
    assert!(second.starts_with("[offline model]") && second.contains("neural networks"), "{second}");
    assert!(second.contains("Earlier you asked about machine learning"), "{second}");

    let weather = converse(
        &OfflineModel::new(),
        &["Hi there! What's the weather like today?", "And what about tomorrow's forecast?"],
    )
    .await;
    assert!(weather[2].content.contains("without a network"), "honest about live data: {}", weather[2].content);
    assert!(weather[4].content.contains("tomorrow's forecast"), "{}", weather[4].content);
    assert!(weather[4].content.contains("Earlier you asked about the weather"), "{}", weather[4].content);
}

#[tokio::test]
async fn usage_is_counted_with_the_tokenizer() {
    let request = ChatRequest::new(vec![Message::system("Be brief."), Message::user(DEMO[0])]);
    let reply = OfflineModel::new().chat(request.clone()).await.unwrap();

    let encoder = tiktoken_rs::o200k_base_singleton();
    let count = |text: &str| encoder.encode_ordinary(text).len() as u64;
    let prompt = (3 + count("system") + count("Be brief.")) + (3 + count("user") + count(DEMO[0])) + 3;
    assert_eq!(reply.usage, Usage::new(prompt, count(&reply.message.content)));
    assert_eq!(reply.usage, tokens::count_usage(&request, &reply.message));
    assert_ne!(reply.usage.completion_tokens, reply.message.content.len() as u64 / 4, "not a length guess");
}

#[tokio::test]
async fn streaming_rebuilds_the_reply_with_usage_last() {
    let request = ChatRequest::new(vec![Message::user(DEMO[1])]);
    let whole = OfflineModel::new().chat(request.clone()).await.unwrap();
    let chunks: Vec<ChatChunk> = OfflineModel::new().stream(request).await.unwrap().map(Result::unwrap).collect().await;
    assert!(chunks.len() > 3, "streamed word by word");
    assert_eq!(chunks.iter().map(|c| c.delta.as_str()).collect::<String>(), whole.message.content);
    assert_eq!(chunks.last().unwrap().usage, Some(whole.usage));
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c.usage.is_none()));
}

#[tokio::test]
async fn scripted_replies_come_in_order_with_tool_calls_then_a_typed_error() {
    let model = OfflineModel::scripted([
        ScriptedReply::tool_call("get_weather", json!({"city": "Paris"})),
        ScriptedReply::text("It is sunny in Paris."),
        ScriptedReply::failure(ModelErrorKind::ServerError, Some(503)),
    ]);
    assert_eq!(model.remaining(), 3);

    let first = model.chat(ChatRequest::new(vec![Message::user("Weather?")])).await.unwrap();
    assert_eq!(first.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(first.message.tool_calls[0].id, "call_1");
    assert_eq!(first.message.tool_calls[0].arguments, json!({"city": "Paris"}));
    assert!(first.usage.completion_tokens > 0);

    let second = model.chat(ChatRequest::new(vec![Message::tool("call_1", "sunny")])).await.unwrap();
    assert_eq!(second.message.content, "It is sunny in Paris.");

    let failure = model.chat(ChatRequest::default()).await.unwrap_err();
    assert!(
        matches!(failure, Error::Model { kind: ModelErrorKind::ServerError, status: Some(503), .. }),
        "{failure:?}"
    );
    assert!(failure.is_retryable());

    let exhausted = model.chat(ChatRequest::default()).await.unwrap_err();
    assert!(matches!(&exhausted, Error::Model { kind: ModelErrorKind::Other, status: None, .. }), "{exhausted:?}");
    assert!(!exhausted.is_retryable());
    assert!(exhausted.source().unwrap().to_string().contains("no reply left after 3"), "{exhausted}");

    let seen = model.requests();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[1].messages[0].tool_call_id.as_deref(), Some("call_1"));
}

#[tokio::test]
async fn scripted_model_accepts_plain_strings() {
    let model = OfflineModel::scripted(["one", "two"]).with_id("test/scripted");
    assert_eq!(model.id(), "test/scripted");
    let mut stream = model.stream(ChatRequest::default()).await.unwrap();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        text.push_str(&chunk.unwrap().delta);
    }
    assert_eq!(text, "one");
    assert_eq!(model.chat(ChatRequest::default()).await.unwrap().message.content, "two");
    assert!(model.stream(ChatRequest::default()).await.is_err(), "an empty script fails when the stream opens");
}

fn calculator() -> ToolSpec {
    ToolSpec::new(
        "calculator",
        "Evaluates an arithmetic expression",
        json!({"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}),
    )
    .with_keywords(["calculate", "compute"])
}

fn lookup() -> ToolSpec {
    ToolSpec::new(
        "lookup",
        "Looks a country up",
        json!({"type": "object", "properties": {"country": {"type": "string"}, "limit": {"type": "integer"}},
               "required": ["country"]}),
    )
    .with_keywords(["capital"])
}

#[tokio::test]
async fn a_tool_turn_offline_calls_the_tools_then_answers_from_their_results() {
    let model = OfflineModel::new();
    let tools = vec![calculator(), lookup()];
    let mut messages =
        vec![Message::system("Use the tools."), Message::user("Compute 6 * 7, then the capital of Peru.")];

    let request = ChatRequest::new(messages.clone()).with_tools(tools.clone());
    let first = model.chat(request.clone()).await.unwrap();
    assert_eq!(first.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(first.message.content, "");
    assert_eq!(
        first.message.tool_calls,
        [
            ToolCall {
                id: "call_1".into(),
                name: "calculator".into(),
                arguments: json!({"expression": "6 * 7, then the capital of Peru"}),
            },
            ToolCall { id: "call_2".into(), name: "lookup".into(), arguments: json!({"country": "Peru", "limit": 6}) },
        ]
    );
    assert_eq!(first.usage, tokens::count_usage(&request, &first.message));
    assert_eq!(model.chat(request).await.unwrap(), first, "the same request, the same calls");

    messages.push(first.message);
    messages.push(Message::tool("call_1", "42"));
    messages.push(Message::tool("call_2", "Lima"));
    let request = ChatRequest::new(messages).with_tools(tools);
    let answer = model.chat(request.clone()).await.unwrap();
    assert_eq!(answer.message.content, "[offline model] calculator: 42. lookup: Lima.");
    assert_eq!(answer.finish_reason.as_deref(), Some("stop"));
    assert!(answer.message.tool_calls.is_empty());
    assert_eq!(answer.usage, tokens::count_usage(&request, &answer.message));
}

#[tokio::test]
async fn keywords_stay_out_of_the_prompt_count() {
    let request = |tool: ToolSpec| ChatRequest::new(vec![Message::user("Compute 2 + 2")]).with_tools(vec![tool]);
    let with = OfflineModel::new().chat(request(calculator())).await.unwrap();
    let without = OfflineModel::new().chat(request(calculator().with_keywords(["compute"]))).await.unwrap();
    assert_eq!(with.usage.prompt_tokens, without.usage.prompt_tokens, "keywords are never sent, so never counted");
}

#[tokio::test]
async fn streaming_delivers_each_tool_call_on_its_own_chunk_then_usage() {
    let request = ChatRequest::new(vec![Message::user("Calculate 1 + 1 and find the capital of Chile")])
        .with_tools(vec![calculator(), lookup()]);
    let whole = OfflineModel::new().chat(request.clone()).await.unwrap();
    let chunks: Vec<ChatChunk> = OfflineModel::new().stream(request).await.unwrap().map(Result::unwrap).collect().await;

    assert_eq!(chunks.len(), 3, "{chunks:?}");
    assert_eq!(chunks[0].tool_calls, whole.message.tool_calls[..1]);
    assert_eq!(chunks[1].tool_calls, whole.message.tool_calls[1..]);
    assert!(chunks[..2].iter().all(|c| c.usage.is_none() && c.finish_reason.is_none() && c.delta.is_empty()));
    let last = chunks.last().unwrap();
    assert_eq!((last.usage, last.finish_reason.as_deref()), (Some(whole.usage), Some("tool_calls")));
    assert!(last.tool_calls.is_empty());
}

#[tokio::test]
async fn tool_choice_steers_the_offline_model() {
    let model = OfflineModel::new();
    let ask = |text: &str| ChatRequest::new(vec![Message::user(text)]).with_tools(vec![calculator(), lookup()]);

    let none = model.chat(ask("Compute 3 + 4").with_tool_choice(ToolChoice::None)).await.unwrap();
    assert!(none.message.tool_calls.is_empty() && none.message.content.starts_with("[offline model]"));
    let required = model.chat(ask("Good morning").with_tool_choice(ToolChoice::Required)).await.unwrap();
    assert_eq!(required.message.tool_calls[0].name, "calculator");
    let named = model.chat(ask("Compute 3 + 4").with_tool_choice(ToolChoice::Tool("lookup".into()))).await.unwrap();
    assert_eq!(named.message.tool_calls[0].name, "lookup");
    assert_eq!(
        named.message.tool_calls[0].arguments,
        json!({"country": "Compute 3 + 4", "limit": 3}),
        "not matched: the whole message"
    );
    let single = model.chat(ask("Compute the capital of 2 countries").with_parallel_tool_calls(false)).await.unwrap();
    assert_eq!(single.message.tool_calls.len(), 1);

    for bad in [
        ask("Compute 3 + 4").with_tool_choice(ToolChoice::Tool("search".into())),
        ChatRequest::new(vec![Message::user("hi")]).with_tool_choice(ToolChoice::Required),
    ] {
        let err = model.chat(bad.clone()).await.unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
        let err = OfflineModel::scripted(["unused"]).chat(bad).await.unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "scripted too: {err:?}");
    }
}

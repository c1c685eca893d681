//! `OfflineModel`: deterministic conversational replies, tokenizer-counted usage, scripted mode.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests: a failure is a panic")]

use std::error::Error as _;

use futures_util::StreamExt;
use lgadk_core::{ChatChunk, ChatModel, ChatRequest, Error, Message, ModelErrorKind, Usage};
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

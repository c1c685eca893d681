//! `OpenAiModel` against a real HTTP server on loopback: replies, streams, tools, retries,
//! failures and timeouts. No network, no key.
#![cfg(feature = "openai")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests: a failure is a panic")]

mod common;

use std::error::Error as _;
use std::time::{Duration, Instant};

use common::{Reply, TestServer, chunk, completion, text_chunk, tool_completion, usage_chunk};
use futures_util::StreamExt;
use lgadk_core::{
    ChatChunk, ChatModel, ChatRequest, Error, Message, ModelErrorKind, ToolCall, ToolChoice, ToolSpec, Usage,
};
use lgadk_llm::{OpenAiModel, RetryPolicy};
use serde_json::json;

fn fast_retry() -> RetryPolicy {
    RetryPolicy::default().with_base_delay(Duration::from_millis(10)).with_max_delay(Duration::from_millis(40))
}

fn model(server: &TestServer, retry: RetryPolicy) -> OpenAiModel {
    OpenAiModel::builder("gpt-test")
        .with_base_url(server.base_url())
        .with_api_key("sk-test-key")
        .with_retry(retry)
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn hello() -> ChatRequest {
    ChatRequest::new(vec![Message::system("Be brief."), Message::user("Hello!")])
}

fn weather_tool() -> ToolSpec {
    ToolSpec::new(
        "get_weather",
        "Current weather for a city",
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    )
}

async fn collect(model: &OpenAiModel, request: ChatRequest) -> Vec<Result<ChatChunk, Error>> {
    model.stream(request).await.unwrap().collect().await
}

fn model_error(err: &Error) -> (Option<u16>, ModelErrorKind) {
    match err {
        Error::Model { model, status, kind, .. } => {
            assert_eq!(model, "openai/gpt-test");
            assert_eq!(err.is_retryable(), kind.is_retryable());
            (*status, kind.clone())
        }
        other => panic!("expected Error::Model, got {other:?}"),
    }
}

#[tokio::test]
async fn json_reply_parses_content_and_usage_and_the_request_is_complete() {
    let server = TestServer::always(Reply::json(200, &completion("Hi there!", Some((21, 4))))).await;
    let model = model(&server, RetryPolicy::none());
    let reply = model.chat(hello().with_temperature(0.25).with_max_tokens(50)).await.unwrap();

    assert_eq!(reply.message.content, "Hi there!");
    assert_eq!(reply.usage, Usage::new(21, 4));
    assert_eq!(reply.finish_reason.as_deref(), Some("stop"));

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/v1/chat/completions"));
    assert_eq!(req.header("authorization"), Some("Bearer sk-test-key"));
    assert_eq!(req.body["model"], "gpt-test");
    assert_eq!(req.body["temperature"], 0.25);
    assert_eq!(req.body["max_completion_tokens"], 50);
    assert_eq!(
        req.body["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}])
    );
    assert!(req.body.get("stream").is_none_or(|s| s == false));
}

#[tokio::test]
async fn missing_usage_is_counted_with_the_tokenizer() {
    let server = TestServer::always(Reply::json(200, &completion("Hello back", None))).await;
    let reply = model(&server, RetryPolicy::none()).chat(hello()).await.unwrap();
    let expected = lgadk_llm::tokens::count_usage(&hello(), &Message::assistant("Hello back"));
    assert_eq!(reply.usage, expected);
    assert!(reply.usage.prompt_tokens > 0 && reply.usage.completion_tokens == 2);
}

#[tokio::test]
async fn sse_stream_yields_deltas_in_order_then_usage() {
    let events = vec![
        chunk(json!({"role": "assistant", "content": ""}), None),
        text_chunk("Hel"),
        text_chunk("lo"),
        text_chunk(" world"),
        chunk(json!({}), Some("stop")),
        usage_chunk(9, 3),
    ];
    let server = TestServer::always(Reply::sse(events)).await;
    let chunks: Vec<ChatChunk> =
        collect(&model(&server, RetryPolicy::none()), hello()).await.into_iter().map(Result::unwrap).collect();

    let deltas: Vec<&str> = chunks.iter().map(|c| c.delta.as_str()).filter(|d| !d.is_empty()).collect();
    assert_eq!(deltas, ["Hel", "lo", " world"]);
    assert_eq!(chunks.iter().filter_map(|c| c.finish_reason.as_deref()).collect::<Vec<_>>(), ["stop"]);
    let last = chunks.last().unwrap();
    assert_eq!(last.usage, Some(Usage::new(9, 3)), "usage comes in the final chunk");
    assert_eq!(chunks.iter().filter(|c| c.usage.is_some()).count(), 1);

    let body = &server.requests()[0].body;
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn tool_calls_in_a_json_reply_are_parsed() {
    let server = TestServer::always(Reply::json(
        200,
        &tool_completion(&[("call_a", "get_weather", r#"{"city":"Paris"}"#), ("call_b", "get_time", "")]),
    ))
    .await;
    let request = ChatRequest::new(vec![Message::user("Weather in Paris?")]).with_tools(vec![weather_tool()]);
    let reply = model(&server, RetryPolicy::none()).chat(request).await.unwrap();

    assert_eq!(reply.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(reply.message.content, "");
    let calls = &reply.message.tool_calls;
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].id.as_str(), calls[0].name.as_str()), ("call_a", "get_weather"));
    assert_eq!(calls[0].arguments, json!({"city": "Paris"}));
    assert_eq!(calls[1].arguments, json!({}), "empty arguments mean none");

    let tools = &server.requests()[0].body["tools"];
    assert_eq!(tools[0]["type"], "function");
    assert_eq!(tools[0]["function"]["name"], "get_weather");
    assert_eq!(tools[0]["function"]["parameters"]["required"], json!(["city"]));
}

#[tokio::test]
async fn streamed_tool_call_fragments_are_assembled() {
    let events = vec![
        chunk(
            json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                   "function": {"name": "get_weather", "arguments": ""}}]}),
            None,
        ),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]}), None),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "ty\": \"Oslo\"}"}}]}), None),
        chunk(json!({}), Some("tool_calls")),
        usage_chunk(40, 9),
    ];
    let server = TestServer::always(Reply::sse(events)).await;
    let request = ChatRequest::new(vec![Message::user("Weather in Oslo?")]).with_tools(vec![weather_tool()]);
    let chunks: Vec<ChatChunk> =
        collect(&model(&server, RetryPolicy::none()), request).await.into_iter().map(Result::unwrap).collect();

    let calls: Vec<_> = chunks.iter().flat_map(|c| c.tool_calls.clone()).collect();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].id.as_str(), calls[0].name.as_str()), ("call_1", "get_weather"));
    assert_eq!(calls[0].arguments, json!({"city": "Oslo"}));
    assert_eq!(chunks.last().unwrap().usage, Some(Usage::new(40, 9)));
    assert_eq!(server.requests()[0].body["tools"][0]["function"]["name"], "get_weather");
}

fn time_tool() -> ToolSpec {
    ToolSpec::new(
        "get_time",
        "Current time in a city",
        json!({"type": "object", "properties": {"city": {"type": "string"}, "format": {"type": "string"}}}),
    )
    .strict()
    .with_keywords(["clock", "time"])
}

#[tokio::test]
async fn tool_options_go_out_exactly_as_openai_documents_them() {
    let server = TestServer::always(Reply::json(200, &completion("ok", Some((5, 1))))).await;
    let model = model(&server, RetryPolicy::none());
    let request =
        || ChatRequest::new(vec![Message::user("Time in Oslo?")]).with_tools(vec![weather_tool(), time_tool()]);
    let choices = [
        (ToolChoice::Auto, json!("auto")),
        (ToolChoice::None, json!("none")),
        (ToolChoice::Required, json!("required")),
        (ToolChoice::Tool("get_time".into()), json!({"type": "function", "function": {"name": "get_time"}})),
    ];
    for (choice, _) in &choices {
        model.chat(request().with_tool_choice(choice.clone()).with_parallel_tool_calls(false)).await.unwrap();
    }
    model.chat(request()).await.unwrap();

    let bodies: Vec<_> = server.requests().into_iter().map(|r| r.body).collect();
    for ((_, expected), body) in choices.iter().zip(&bodies) {
        assert_eq!(&body["tool_choice"], expected);
        assert_eq!(body["parallel_tool_calls"], false);
    }
    let tools = &bodies[0]["tools"];
    assert_eq!(
        tools[1],
        json!({"type": "function", "function": {
            "name": "get_time",
            "description": "Current time in a city",
            "parameters": {"type": "object", "additionalProperties": false, "required": ["city", "format"],
                           "properties": {"city": {"type": "string"}, "format": {"type": "string"}}},
            "strict": true,
        }}),
        "strict and a strict-mode schema; the offline model's keywords stay home"
    );
    assert!(tools[0]["function"].get("strict").is_none(), "a tool that is not strict sends no `strict`");
    let defaults = &bodies[4];
    assert!(defaults.get("tool_choice").is_none() && defaults.get("parallel_tool_calls").is_none(), "{defaults}");
}

#[tokio::test]
async fn a_strict_tool_whose_schema_breaks_strict_mode_is_refused_like_openai_does() {
    let server = TestServer::always(Reply::json(200, &completion("ok", None))).await;
    let mut loose = weather_tool();
    loose.strict = true; // set by hand: the schema is not closed
    let request = ChatRequest::new(vec![Message::user("Weather?")]).with_tools(vec![loose]);
    let err = model(&server, fast_retry()).chat(request).await.unwrap_err();
    assert_eq!(model_error(&err), (Some(400), ModelErrorKind::InvalidRequest));
    assert!(err.source().unwrap().to_string().contains("'additionalProperties' is required"), "{err:?}");
    assert_eq!(server.request_count(), 1);

    let request = ChatRequest::new(vec![Message::user("Weather?")]).with_tools(vec![weather_tool().strict()]);
    model(&server, fast_retry()).chat(request).await.unwrap();
}

/// Two parallel calls whose ids, names and argument fragments arrive interleaved over
/// several chunks, one chunk carrying fragments of both.
fn parallel_call_events() -> Vec<serde_json::Value> {
    let call = |index: u32, id: &str, name: &str| json!({"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}});
    let args = |index: u32, part: &str| json!({"index": index, "function": {"arguments": part}});
    vec![
        chunk(json!({"role": "assistant", "content": null, "tool_calls": [call(0, "call_w", "get_weather")]}), None),
        chunk(json!({"tool_calls": [args(0, "{\"ci")]}), None),
        chunk(json!({"tool_calls": [call(1, "call_t", "get_time")]}), None),
        chunk(json!({"tool_calls": [args(1, "{\"city\": \"Li"), args(0, "ty\": \"Pa")]}), None),
        chunk(json!({"tool_calls": [args(1, "ma\", \"format\": \"24h\"}")]}), None),
        chunk(json!({"tool_calls": [args(0, "ris\"}")]}), None),
        chunk(json!({}), Some("tool_calls")),
        usage_chunk(61, 30),
    ]
}

#[tokio::test]
async fn parallel_streamed_tool_calls_assemble_whole_and_in_order() {
    let server = TestServer::always(Reply::sse(parallel_call_events())).await;
    let request = ChatRequest::new(vec![Message::user("Weather in Paris and time in Lima?")])
        .with_tools(vec![weather_tool(), time_tool()]);
    let chunks: Vec<ChatChunk> =
        collect(&model(&server, RetryPolicy::none()), request).await.into_iter().map(Result::unwrap).collect();

    let calls: Vec<ToolCall> = chunks.iter().flat_map(|c| c.tool_calls.clone()).collect();
    assert_eq!(
        calls,
        [
            ToolCall { id: "call_w".into(), name: "get_weather".into(), arguments: json!({"city": "Paris"}) },
            ToolCall {
                id: "call_t".into(),
                name: "get_time".into(),
                arguments: json!({"city": "Lima", "format": "24h"})
            },
        ]
    );
    assert_eq!(chunks.iter().filter_map(|c| c.finish_reason.as_deref()).collect::<Vec<_>>(), ["tool_calls"]);
    assert_eq!(chunks.last().unwrap().usage, Some(Usage::new(61, 30)));
    assert!(chunks.iter().all(|c| c.delta.is_empty()), "no text in a tool-call reply");
}

#[tokio::test]
async fn streamed_calls_from_servers_that_repeat_id_and_name_on_every_fragment_keep_them_once() {
    // Fireworks, DeepSeek, Qwen and LiteLLM's proxy send the id and name with each fragment.
    let fragment = |index: u32, id: &str, name: &str, part: &str| json!({"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": part}});
    let events = vec![
        chunk(json!({"role": "assistant", "tool_calls": [fragment(0, "call_w", "get_weather", "{\"city\":")]}), None),
        chunk(json!({"tool_calls": [fragment(0, "call_w", "get_weather", " \"Oslo\"}")]}), None),
        chunk(json!({"tool_calls": [fragment(1, "call_t", "get_time", "{\"city\": \"Oslo\", ")]}), None),
        chunk(json!({"tool_calls": [fragment(1, "call_t", "get_time", "\"format\": \"12h\"}")]}), None),
        chunk(json!({}), Some("tool_calls")),
    ];
    let server = TestServer::always(Reply::sse(events)).await;
    let request = ChatRequest::new(vec![Message::user("Weather and time in Oslo?")]).with_tools(vec![weather_tool()]);
    let chunks: Vec<ChatChunk> =
        collect(&model(&server, RetryPolicy::none()), request).await.into_iter().map(Result::unwrap).collect();
    let calls: Vec<(String, String)> =
        chunks.iter().flat_map(|c| &c.tool_calls).map(|c| (c.id.clone(), c.name.clone())).collect();
    assert_eq!(calls, [("call_w".into(), "get_weather".into()), ("call_t".into(), "get_time".into())]);
}

#[tokio::test]
async fn tool_results_go_back_well_formed_and_the_server_accepts_them() {
    let server = TestServer::sequence(vec![
        Reply::sse(parallel_call_events()),
        Reply::json(200, &completion("Sunny in Paris; 14:05 in Lima.", Some((90, 12)))),
    ])
    .await;
    let model = model(&server, RetryPolicy::none());
    let mut messages = vec![Message::system("Be brief."), Message::user("Weather in Paris and time in Lima?")];
    let tools = vec![weather_tool(), time_tool()];
    let mut calls = Vec::new();
    let mut stream = model.stream(ChatRequest::new(messages.clone()).with_tools(tools.clone())).await.unwrap();
    while let Some(chunk) = stream.next().await {
        calls.extend(chunk.unwrap().tool_calls);
    }
    messages.push(Message { tool_calls: calls, ..Message::assistant("") });
    messages.push(Message::tool("call_w", "sunny, 21°C"));
    messages.push(Message::tool("call_t", "14:05"));
    let reply = model.chat(ChatRequest::new(messages).with_tools(tools)).await.unwrap();
    assert_eq!(reply.message.content, "Sunny in Paris; 14:05 in Lima.");

    let follow_up = &server.requests()[1].body;
    assert_eq!(
        follow_up["messages"].as_array().unwrap()[2..],
        [
            json!({"role": "assistant", "tool_calls": [
                {"id": "call_w", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_t", "type": "function",
                 "function": {"name": "get_time", "arguments": "{\"city\":\"Lima\",\"format\":\"24h\"}"}},
            ]}),
            json!({"role": "tool", "content": "sunny, 21°C", "tool_call_id": "call_w"}),
            json!({"role": "tool", "content": "14:05", "tool_call_id": "call_t"}),
        ]
    );
}

#[tokio::test]
async fn a_tool_call_left_unanswered_is_refused_like_openai_does() {
    let server = TestServer::always(Reply::json(200, &completion("ok", None))).await;
    let model = model(&server, fast_retry());
    let call = |id: &str| ToolCall { id: id.into(), name: "get_weather".into(), arguments: json!({"city": "Oslo"}) };
    let asked = Message { tool_calls: vec![call("call_1"), call("call_2")], ..Message::assistant("") };

    let missing =
        vec![Message::user("Weather?"), asked.clone(), Message::tool("call_1", "rain"), Message::user("And?")];
    let err = model.chat(ChatRequest::new(missing).with_tools(vec![weather_tool()])).await.unwrap_err();
    assert_eq!(model_error(&err), (Some(400), ModelErrorKind::InvalidRequest));
    let detail = err.source().unwrap().to_string();
    assert!(detail.contains("did not have response messages: call_2"), "{detail}");

    let stray = vec![Message::user("Weather?"), Message::tool("call_9", "rain")];
    let err = model.chat(ChatRequest::new(stray)).await.unwrap_err();
    assert_eq!(model_error(&err), (Some(400), ModelErrorKind::InvalidRequest));
    assert!(err.source().unwrap().to_string().contains("must be a response to a preceeding message"), "{err:?}");
    assert_eq!(server.request_count(), 2, "refusals are not retried");

    let answered =
        vec![Message::user("Weather?"), asked, Message::tool("call_2", "sun"), Message::tool("call_1", "rain")];
    model.chat(ChatRequest::new(answered).with_tools(vec![weather_tool()])).await.unwrap();
}

#[tokio::test]
async fn arguments_that_are_not_json_reach_the_caller_as_text_and_go_back_unchanged() {
    let broken = r#"{"city": "Par"#;
    let server = TestServer::sequence(vec![
        Reply::json(200, &tool_completion(&[("call_a", "get_weather", broken)])),
        Reply::json(200, &completion("Sorry, Paris it is.", None)),
    ])
    .await;
    let model = model(&server, RetryPolicy::none());
    let mut messages = vec![Message::user("Weather in Paris?")];
    let reply = model.chat(ChatRequest::new(messages.clone()).with_tools(vec![weather_tool()])).await.unwrap();
    assert_eq!(reply.message.tool_calls[0].arguments, json!(broken), "not a failed completion");
    let check = lgadk_core::tool::check_arguments(
        "get_weather",
        &weather_tool().parameters,
        &reply.message.tool_calls[0].arguments,
    );
    assert!(check.is_err(), "the tool loop can tell the model its arguments were not an object");

    messages.push(reply.message);
    messages.push(Message::tool("call_a", "invalid arguments: expected a JSON object"));
    model.chat(ChatRequest::new(messages).with_tools(vec![weather_tool()])).await.unwrap();
    let sent_back = &server.requests()[1].body["messages"][1]["tool_calls"][0]["function"]["arguments"];
    assert_eq!(sent_back, broken);
}

#[tokio::test]
async fn rate_limit_with_retry_after_is_retried_once_and_honoured() {
    let server = TestServer::sequence(vec![
        Reply::error(429, "Rate limit reached").with_header("Retry-After", "1"),
        Reply::json(200, &completion("finally", Some((5, 1)))),
    ])
    .await;
    // Retry-After asks for 1 s; the cap shortens it to 150 ms, still far above the 10 ms backoff.
    let retry = fast_retry().with_max_retry_after(Duration::from_millis(150));
    let started = Instant::now();
    let reply = model(&server, retry).chat(hello()).await.unwrap();
    let elapsed = started.elapsed();

    assert_eq!(reply.message.content, "finally");
    assert_eq!(server.request_count(), 2);
    assert!(elapsed >= Duration::from_millis(150), "Retry-After was not honoured: {elapsed:?}");
    assert!(elapsed < Duration::from_millis(900), "Retry-After was not capped: {elapsed:?}");
}

#[tokio::test]
async fn server_errors_are_retried_exactly_as_configured_then_reported_retryable() {
    let server = TestServer::always(Reply::raw(500, "text/plain", "upstream exploded")).await;
    let err = model(&server, fast_retry().with_max_retries(2)).chat(hello()).await.unwrap_err();

    assert_eq!(model_error(&err), (Some(500), ModelErrorKind::ServerError));
    assert!(err.is_retryable());
    assert_eq!(server.request_count(), 3, "1 attempt + 2 retries");
    assert_eq!(err.to_string(), "model `openai/gpt-test` failed with status 500: server error");
    let detail = err.source().unwrap().to_string();
    assert!(detail.contains("500") && detail.contains("upstream exploded"), "{detail}");
}

#[tokio::test]
async fn bad_request_is_not_retried() {
    let server = TestServer::always(Reply::error(400, "Invalid value for 'temperature'")).await;
    let err = model(&server, fast_retry()).chat(hello()).await.unwrap_err();
    assert_eq!(model_error(&err), (Some(400), ModelErrorKind::InvalidRequest));
    assert_eq!(server.request_count(), 1);
    assert!(err.source().unwrap().to_string().contains("Invalid value for 'temperature'"));
}

#[tokio::test]
async fn unauthorized_is_a_clear_auth_error() {
    let server = TestServer::always(Reply::error(401, "Incorrect API key provided")).await;
    let err = model(&server, fast_retry()).chat(hello()).await.unwrap_err();
    assert_eq!(model_error(&err), (Some(401), ModelErrorKind::Authentication));
    assert_eq!(server.request_count(), 1);
    let detail = err.source().unwrap().to_string();
    assert!(detail.contains("rejected the credentials") && detail.contains("OPENAI_API_KEY"), "{detail}");
    assert!(detail.contains("Incorrect API key provided"), "{detail}");
}

#[tokio::test]
async fn malformed_json_body_is_a_typed_decode_error() {
    let server = TestServer::always(Reply::raw(200, "application/json", "{\"id\": \"chatcmpl-1\", \"choi")).await;
    let err = model(&server, fast_retry()).chat(hello()).await.unwrap_err();
    assert_eq!(model_error(&err), (None, ModelErrorKind::MalformedResponse));
    assert_eq!(server.request_count(), 1);
    assert!(err.source().unwrap().to_string().contains("does not decode"));
    assert!(err.source().unwrap().source().is_some(), "the serde error is kept as the cause");
}

#[tokio::test]
async fn stream_cut_mid_way_yields_the_chunks_then_a_typed_error() {
    let server = TestServer::always(Reply::sse_cut(vec![text_chunk("Once"), text_chunk(" upon")])).await;
    let items = collect(&model(&server, fast_retry()), hello()).await;

    let (oks, errs): (Vec<_>, Vec<_>) = items.into_iter().partition(Result::is_ok);
    let text: String = oks.into_iter().map(|c| c.unwrap().delta).collect();
    assert_eq!(text, "Once upon");
    assert_eq!(errs.len(), 1, "exactly one error, then the stream ends");
    let err = errs.into_iter().next().unwrap().unwrap_err();
    assert_eq!(model_error(&err), (None, ModelErrorKind::StreamCut));
    assert!(err.source().unwrap().to_string().contains("stream broke off"), "{err:?}");
    assert_eq!(server.request_count(), 1, "a stream is never retried mid-way");
}

#[tokio::test]
async fn stream_ending_before_the_model_finished_is_a_typed_error() {
    let server = TestServer::always(Reply::sse_without_done(vec![text_chunk("Half a sent")])).await;
    let items = collect(&model(&server, RetryPolicy::none()), hello()).await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].as_ref().unwrap().delta, "Half a sent");
    let err = items[1].as_ref().unwrap_err();
    assert_eq!(model_error(err), (None, ModelErrorKind::StreamCut));
}

#[tokio::test]
async fn opening_a_stream_is_retried_on_server_errors() {
    let server = TestServer::sequence(vec![
        Reply::error(503, "overloaded"),
        Reply::sse(vec![text_chunk("ok"), chunk(json!({}), Some("stop")), usage_chunk(3, 1)]),
    ])
    .await;
    let items = collect(&model(&server, fast_retry()), hello()).await;
    assert!(items.iter().all(Result::is_ok));
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn server_slower_than_the_timeout_fails_within_the_timeout() {
    let server =
        TestServer::always(Reply::json(200, &completion("too late", None)).delayed(Duration::from_secs(5))).await;
    let started = Instant::now();
    let err = short_timeout_model(&server).chat(hello()).await.unwrap_err();
    let elapsed = started.elapsed();
    // 300 ms timeout plus a margin for a loaded 2-core CI machine.
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(1000), "{elapsed:?}");
    assert_eq!(model_error(&err), (None, ModelErrorKind::Timeout));
    assert!(err.source().unwrap().to_string().contains("no answer within 300ms"));
    assert_eq!(server.request_count(), 1, "a timeout is reported, not retried");

    // Opening a stream is bounded the same way…
    let slow_open = TestServer::always(Reply::sse(vec![text_chunk("late")]).delayed(Duration::from_secs(5))).await;
    let started = Instant::now();
    let err = short_timeout_model(&slow_open).stream(hello()).await.err().expect("opening the stream times out");
    assert!(started.elapsed() < Duration::from_millis(1000), "{:?}", started.elapsed());
    assert_eq!(model_error(&err), (None, ModelErrorKind::Timeout));

    // …and so is each next chunk of a stream that opened and then went silent.
    let stalled = TestServer::always(Reply::sse_stalled(vec![text_chunk("first words")])).await;
    let started = Instant::now();
    let items = collect(&short_timeout_model(&stalled), hello()).await;
    assert!(started.elapsed() < Duration::from_millis(1000), "{:?}", started.elapsed());
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].as_ref().unwrap().delta, "first words");
    let err = items[1].as_ref().unwrap_err();
    assert_eq!(model_error(err), (None, ModelErrorKind::Timeout));
    assert!(err.source().unwrap().to_string().contains("no answer within 300ms"));
}

fn short_timeout_model(server: &TestServer) -> OpenAiModel {
    OpenAiModel::builder("gpt-test")
        .with_base_url(server.base_url())
        .with_api_key("k")
        .with_timeout(Duration::from_millis(300))
        .with_retry(fast_retry())
        .build()
        .unwrap()
}

#[tokio::test]
async fn connection_refused_is_a_connect_error_and_retried() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let refused = |retries: u32| {
        OpenAiModel::builder("gpt-test")
            .with_base_url(format!("http://{addr}/v1"))
            .with_api_key("k")
            .with_retry(RetryPolicy::default().with_max_retries(retries).with_base_delay(Duration::from_millis(100)))
            .build()
            .unwrap()
    };
    // Nothing listens, so no request can be counted: the retries show in the time taken, two
    // backoffs of at least 75 ms and 150 ms (the jitter shortens each by up to a quarter).
    let started = Instant::now();
    let err = refused(2).chat(hello()).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(model_error(&err), (None, ModelErrorKind::Connect));
    assert!(elapsed >= Duration::from_millis(225), "two backoffs happened: {elapsed:?}");
    assert!(err.source().unwrap().to_string().contains("could not connect"), "{err:?}");
    assert!(err.source().unwrap().source().is_some(), "the reqwest error is kept as the cause");

    let err = refused(0).stream(hello()).await.err().expect("nothing listens");
    assert_eq!(model_error(&err), (None, ModelErrorKind::Connect));
}

#[tokio::test]
async fn builder_validates_its_configuration() {
    let bad_url = OpenAiModel::builder("m").with_base_url("not a url").with_api_key("k").build().unwrap_err();
    assert!(matches!(bad_url, Error::InvalidConfig { .. }), "{bad_url}");
    let empty = OpenAiModel::builder(" ").with_api_key("k").build().unwrap_err();
    assert!(matches!(empty, Error::InvalidConfig { .. }), "{empty}");
    let ok = OpenAiModel::builder("m").with_base_url("http://127.0.0.1:9/v1/").with_id("local/m").build().unwrap();
    assert_eq!((ok.id(), ok.base_url(), ok.model()), ("local/m", "http://127.0.0.1:9/v1", "m"));
    assert!(!format!("{ok:?}").contains("sk-"), "Debug never shows a key");
}

// ---- Error kinds, each from a real exchange, and what the retry loop does with them -------

/// Sends `hello()` with up to 2 retries; returns the error and how many requests the server saw.
async fn fail_with(reply: Reply) -> (Error, usize) {
    let server = TestServer::always(reply).await;
    let err = model(&server, fast_retry().with_max_retries(2)).chat(hello()).await.unwrap_err();
    (err, server.request_count())
}

#[tokio::test]
async fn a_server_that_accepts_and_hangs_up_gets_one_request_by_default() {
    let server = TestServer::always(Reply::HangUp.delayed(Duration::from_millis(200))).await;
    let started = Instant::now();
    let err = model(&server, fast_retry()).chat(hello()).await.unwrap_err();
    let elapsed = started.elapsed();

    assert_eq!(model_error(&err), (None, ModelErrorKind::ConnectionLost));
    assert_eq!(server.request_count(), 1, "a completion is not idempotent: no retry once it was sent");
    assert!(elapsed < Duration::from_millis(1500), "no backoff either: {elapsed:?}");
    assert!(err.is_retryable(), "trying again may work, it is just not done behind the caller's back");
    assert!(err.source().unwrap().to_string().contains("after the request was sent"), "{err:?}");

    // The request that opens a stream is treated the same way.
    let err = model(&server, fast_retry()).stream(hello()).await.err().expect("the server hangs up");
    assert_eq!(model_error(&err), (None, ModelErrorKind::ConnectionLost));
    assert_eq!(server.request_count(), 2, "one more request, not four");
}

#[tokio::test]
async fn retrying_after_send_can_be_turned_on() {
    let server = TestServer::always(Reply::HangUp).await;
    let err =
        model(&server, fast_retry().with_max_retries(2).with_retry_after_send(true)).chat(hello()).await.unwrap_err();
    assert_eq!(model_error(&err), (None, ModelErrorKind::ConnectionLost));
    assert_eq!(server.request_count(), 3, "1 attempt + 2 retries");

    let flaky =
        TestServer::sequence(vec![Reply::HangUp, Reply::json(200, &completion("second time lucky", None))]).await;
    let reply = model(&flaky, fast_retry().with_retry_after_send(true)).chat(hello()).await.unwrap();
    assert_eq!(reply.message.content, "second time lucky");
    assert_eq!(flaky.request_count(), 2);
}

#[tokio::test]
async fn server_errors_and_overload_are_retried() {
    for status in [500, 502, 503, 529] {
        let (err, requests) = fail_with(Reply::error(status, "try later")).await;
        assert_eq!(model_error(&err), (Some(status), ModelErrorKind::ServerError), "{status}");
        assert_eq!(requests, 3, "{status}: 1 attempt + 2 retries");
    }
}

#[tokio::test]
async fn rate_limits_are_retried_and_report_the_wait_asked_for() {
    let limited = || Reply::api_error(429, "Rate limit reached", Some("requests"), Some("rate_limit_exceeded"));
    let (err, requests) = fail_with(limited().with_header("Retry-After", "0")).await;
    let zero = ModelErrorKind::RateLimited { retry_after: Some(Duration::ZERO) };
    assert_eq!(model_error(&err), (Some(429), zero));
    assert_eq!(requests, 3, "1 attempt + 2 retries");

    let server = TestServer::always(limited().with_header("retry-after-ms", "1500")).await;
    let err = model(&server, RetryPolicy::none()).chat(hello()).await.unwrap_err();
    let asked = ModelErrorKind::RateLimited { retry_after: Some(Duration::from_millis(1500)) };
    assert_eq!(model_error(&err), (Some(429), asked));
    assert_eq!(err.to_string(), "model `openai/gpt-test` failed with status 429: rate limited, retry after 1.5s");

    let (err, _) = fail_with(Reply::raw(429, "text/plain", "slow down")).await;
    assert_eq!(model_error(&err), (Some(429), ModelErrorKind::RateLimited { retry_after: None }));
}

#[tokio::test]
async fn an_exhausted_quota_is_final() {
    let body = "You exceeded your current quota, please check your plan and billing details.";
    let (err, requests) =
        fail_with(Reply::api_error(429, body, Some("insufficient_quota"), Some("insufficient_quota"))).await;
    assert_eq!(model_error(&err), (Some(429), ModelErrorKind::Quota));
    assert_eq!(requests, 1);
    assert!(!err.is_retryable());

    let (err, requests) = fail_with(Reply::error(402, "Insufficient credits")).await;
    assert_eq!(model_error(&err), (Some(402), ModelErrorKind::Quota));
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn credentials_errors_are_authentication() {
    for status in [401, 403] {
        let (err, requests) = fail_with(Reply::error(status, "no access")).await;
        assert_eq!(model_error(&err), (Some(status), ModelErrorKind::Authentication));
        assert_eq!(requests, 1);
    }
}

#[tokio::test]
async fn context_window_overflows_are_recognised_across_servers() {
    let openai = "This model's maximum context length is 128000 tokens. However, your messages resulted in \
                  130000 tokens. Please reduce the length of the messages.";
    let cases = [
        ("OpenAI", Reply::api_error(400, openai, Some("invalid_request_error"), Some("context_length_exceeded"))),
        (
            "vLLM",
            Reply::json(
                400,
                &json!({"error": {"message": "This model's maximum context length is 4096 tokens and your request \
                    has 5000 input tokens", "type": "BadRequestError", "param": null, "code": 400}}),
            ),
        ),
        (
            "vLLM (unwrapped)",
            Reply::json(
                400,
                &json!({"object": "error", "message": "This model's maximum context length is 2048 tokens. However, \
                    you requested 2100 tokens.", "type": "BadRequestError", "param": null, "code": 400}),
            ),
        ),
        (
            "llama.cpp",
            Reply::json(
                400,
                &json!({"error": {"code": 400, "message": "request (4476 tokens) exceeds the available context size \
                    (4096 tokens)", "type": "exceed_context_size_error", "n_prompt_tokens": 4476, "n_ctx": 4096}}),
            ),
        ),
        ("Ollama", Reply::json(500, &json!({"error": "the input length exceeds the context length"}))),
        (
            "LM Studio",
            Reply::error(
                400,
                "The number of tokens to keep from the initial prompt is greater than the context length. Try to \
                 load the model with a larger context length, or provide a shorter input",
            ),
        ),
        (
            "LiteLLM",
            Reply::api_error(
                400,
                "litellm.ContextWindowExceededError: litellm.BadRequestError: AnthropicException - prompt is too \
                 long: 200001 tokens > 200000 maximum",
                None,
                Some("400"),
            ),
        ),
        ("plain text", Reply::raw(413, "text/plain", "Input is too long for the model")),
    ];
    for (server_name, reply) in cases {
        let (err, requests) = fail_with(reply).await;
        let (_, kind) = model_error(&err);
        assert_eq!(kind, ModelErrorKind::ContextWindowExceeded, "{server_name}: {err:?}");
        assert_eq!(requests, 1, "{server_name}: an overflow is not retried, not even after a 500");
        assert!(!err.is_retryable(), "{server_name}");
    }
    // Other bad requests stay invalid requests.
    let (err, requests) = fail_with(Reply::error(404, "The model `gpt-test` does not exist")).await;
    assert_eq!(model_error(&err), (Some(404), ModelErrorKind::InvalidRequest));
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn content_filtering_is_recognised_from_the_error_code_and_the_finish_reason() {
    let azure = "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.";
    let (err, requests) = fail_with(Reply::api_error(400, azure, None, Some("content_filter"))).await;
    assert_eq!(model_error(&err), (Some(400), ModelErrorKind::ContentFiltered));
    assert_eq!(requests, 1);

    let mut filtered = completion("", Some((12, 0)));
    filtered["choices"][0]["finish_reason"] = json!("content_filter");
    let server = TestServer::always(Reply::json(200, &filtered)).await;
    let err = model(&server, fast_retry()).chat(hello()).await.unwrap_err();
    assert_eq!(model_error(&err), (None, ModelErrorKind::ContentFiltered));
    assert_eq!(server.request_count(), 1);

    // A stream delivers what came before the filter stopped it (also in the stopping chunk),
    // then the error.
    let stopped = chunk(json!({"content": " the"}), Some("content_filter"));
    let server = TestServer::always(Reply::sse(vec![text_chunk("Here is"), stopped])).await;
    let items = collect(&model(&server, fast_retry()), hello()).await;
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap().delta, "Here is");
    assert_eq!(items[1].as_ref().unwrap().delta, " the");
    assert_eq!(model_error(items[2].as_ref().unwrap_err()), (None, ModelErrorKind::ContentFiltered));

    let server = TestServer::always(Reply::sse(vec![chunk(json!({}), Some("content_filter"))])).await;
    let items = collect(&model(&server, fast_retry()), hello()).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(model_error(items[0].as_ref().unwrap_err()), (None, ModelErrorKind::ContentFiltered));
}

#[tokio::test]
async fn malformed_answers_are_malformed_responses() {
    let mut no_choices = completion("", None);
    no_choices["choices"] = json!([]);
    let (err, requests) = fail_with(Reply::json(200, &no_choices)).await;
    assert_eq!(model_error(&err), (None, ModelErrorKind::MalformedResponse));
    assert_eq!(requests, 1);

    let (err, _) = fail_with(Reply::raw(200, "text/html", "<html>captive portal</html>")).await;
    assert_eq!(model_error(&err), (None, ModelErrorKind::MalformedResponse));
}

#[tokio::test]
async fn an_error_object_in_a_stream_is_classified() {
    let error_event = json!({"error": {"message": "The server had an error while processing your request.",
                                       "type": "server_error", "param": null, "code": null}});
    let server = TestServer::always(Reply::sse(vec![text_chunk("Hel"), error_event])).await;
    let items = collect(&model(&server, fast_retry()), hello()).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap().delta, "Hel");
    let err = items[1].as_ref().unwrap_err();
    assert_eq!(model_error(err), (None, ModelErrorKind::ServerError));
    assert!(err.source().unwrap().to_string().contains("had an error while processing"), "{err:?}");

    let overflow = json!({"error": {"message": "This model's maximum context length is 4096 tokens", "code": 400}});
    let server = TestServer::always(Reply::sse(vec![overflow])).await;
    let items = collect(&model(&server, fast_retry()), hello()).await;
    assert_eq!(model_error(items[0].as_ref().unwrap_err()), (None, ModelErrorKind::ContextWindowExceeded));
    assert_eq!(server.request_count(), 1);
}

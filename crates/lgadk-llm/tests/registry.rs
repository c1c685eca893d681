//! The model registry resolving providers, with base URLs pointed at a loopback server.
#![cfg(feature = "openai")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests: a failure is a panic")]

mod common;

use std::sync::Arc;

use common::{Reply, TestServer, completion};
use lgadk_core::{ChatModel, ChatRequest, Error, Message, Usage};
use lgadk_llm::{ModelRegistry, OfflineModel};

fn registry(vars: Vec<(&'static str, String)>) -> ModelRegistry {
    ModelRegistry::with_defaults()
        .with_env_lookup(move |key| vars.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()))
}

fn hello() -> ChatRequest {
    ChatRequest::new(vec![Message::user("Hello!")])
}

#[tokio::test]
async fn ollama_prefix_uses_ollama_host() {
    let server = TestServer::always(Reply::json(200, &completion("llama says hi", Some((7, 3))))).await;
    // OLLAMA_HOST is usually `host:port`, without scheme or /v1.
    let model = registry(vec![("OLLAMA_HOST", server.host()), ("OPENAI_API_KEY", "sk-secret".into())])
        .get("ollama/llama3")
        .unwrap();
    assert_eq!(model.id(), "ollama/llama3");
    let reply = model.chat(hello().with_max_tokens(20)).await.unwrap();
    assert_eq!((reply.message.content.as_str(), reply.usage), ("llama says hi", Usage::new(7, 3)));

    let request = &server.requests()[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.body["model"], "llama3");
    assert_eq!(request.body["max_tokens"], 20, "Ollama gets the widely supported field");
    assert_ne!(request.header("authorization"), Some("Bearer sk-secret"), "the OpenAI key never goes to Ollama");
}

#[tokio::test]
async fn openai_prefix_honours_base_url_and_key_overrides() {
    let server = TestServer::always(Reply::json(200, &completion("from the proxy", None))).await;
    let model = registry(vec![("OPENAI_BASE_URL", server.base_url()), ("OPENAI_API_KEY", "sk-from-env".into())])
        .get("openai/gpt-4o-mini")
        .unwrap();
    assert_eq!(model.chat(hello()).await.unwrap().message.content, "from the proxy");
    let request = &server.requests()[0];
    assert_eq!(request.body["model"], "gpt-4o-mini");
    assert_eq!(request.header("authorization"), Some("Bearer sk-from-env"));
}

#[tokio::test]
async fn known_prefixes_resolve_and_unknown_ones_list_the_known() {
    let r = registry(vec![("OPENAI_API_KEY", "sk".into())]);
    for spec in ["openai/gpt-4o-mini", "ollama/llama3", "offline"] {
        assert_eq!(r.get(spec).unwrap().id(), spec);
    }
    let err = r.get("mistral/large").unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig { reason } if reason.ends_with("known providers: offline, ollama, openai")),
        "{err}"
    );
    let missing_key = registry(Vec::new()).get("openai/gpt-4o-mini").unwrap_err();
    assert!(
        matches!(&missing_key, Error::InvalidConfig { reason } if reason.contains("OPENAI_API_KEY")),
        "{missing_key}"
    );
}

#[tokio::test]
async fn users_can_register_a_provider_globally() {
    lgadk_llm::register_provider("canned", |spec| {
        Ok(Arc::new(OfflineModel::scripted(["canned reply"]).with_id(spec.spec())) as Arc<dyn ChatModel>)
    })
    .unwrap();
    let model = lgadk_llm::get_model("canned/any").unwrap();
    assert_eq!(model.id(), "canned/any");
    assert_eq!(model.chat(hello()).await.unwrap().message.content, "canned reply");
    let err = lgadk_llm::get_model("nope/x").unwrap_err().to_string();
    assert!(err.contains("canned, offline, ollama, openai"), "{err}");
}

//! The model registry: `"provider/model"` → a ready [`ChatModel`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use lgadk_core::memory::Embedder;
use lgadk_core::{ChatModel, Error, Result};

use crate::offline::{LexicalEmbedder, OfflineModel};

/// Ollama's OpenAI-compatible endpoint when `OLLAMA_HOST` is unset.
pub const OLLAMA_BASE_URL: &str = "http://localhost:11434/v1";

type EnvFn = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Builds the model a [`ModelSpec`] names; registered under a provider prefix.
pub type ProviderFn = dyn Fn(&ModelSpec<'_>) -> Result<Arc<dyn ChatModel>> + Send + Sync;

/// What a provider constructor is asked for: `ollama/llama3` is provider `ollama`, model `llama3`.
pub struct ModelSpec<'a> {
    spec: &'a str,
    provider: &'a str,
    model: &'a str,
    env: &'a EnvFn,
}

impl fmt::Debug for ModelSpec<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelSpec").field("provider", &self.provider).field("model", &self.model).finish()
    }
}

impl ModelSpec<'_> {
    /// The whole spec as given, e.g. `ollama/llama3`; use it as the model's id.
    pub fn spec(&self) -> &str {
        self.spec
    }

    /// The provider prefix, lowercase (`ollama`).
    pub fn provider(&self) -> &str {
        self.provider
    }

    /// Everything after the first `/` (`llama3`; may itself contain `/`); empty when absent.
    pub fn model(&self) -> &str {
        self.model
    }

    /// A configuration variable (`OLLAMA_HOST`…), from the process environment unless the
    /// registry was given another source with [`ModelRegistry::with_env_lookup`]. Empty values
    /// count as unset.
    pub fn env(&self, key: &str) -> Option<String> {
        (self.env)(key).filter(|v| !v.trim().is_empty())
    }

    /// The model name, or an [`Error::InvalidConfig`] saying that the spec lacks one.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the spec has no model part.
    pub fn require_model(&self) -> Result<&str> {
        if self.model.trim().is_empty() {
            return Err(Error::InvalidConfig {
                reason: format!("`{}` names no model: write `{}/<model>`", self.spec, self.provider),
            });
        }
        Ok(self.model)
    }
}

/// Maps provider prefixes to constructors. [`ModelRegistry::with_defaults`] knows `openai`,
/// `ollama` and `offline`; add your own with [`register`](Self::register).
///
/// | spec | model |
/// |---|---|
/// | `openai/<model>` | [`OpenAiModel`](crate::OpenAiModel) with `OPENAI_API_KEY` (required for OpenAI's own URL) and `OPENAI_BASE_URL` |
/// | `ollama/<model>` | [`OpenAiModel`](crate::OpenAiModel) at `OLLAMA_HOST` (default [`OLLAMA_BASE_URL`]), no key |
/// | `offline` or `offline/<anything>` | [`OfflineModel`] |
///
/// ```
/// use std::sync::Arc;
/// use lgadk_core::ChatModel;
/// use lgadk_llm::{ModelRegistry, OfflineModel};
///
/// let mut registry = ModelRegistry::with_defaults();
/// registry.register("echo", |spec| Ok(Arc::new(OfflineModel::new().with_id(spec.spec())) as Arc<dyn ChatModel>))?;
/// assert_eq!(registry.get("echo/v1")?.id(), "echo/v1");
/// assert_eq!(registry.get("offline")?.id(), "offline");
///
/// let unknown = registry.get("acme/x").unwrap_err().to_string();
/// assert!(unknown.contains("echo, offline, ollama, openai"), "{unknown}");
/// # Ok::<(), lgadk_core::Error>(())
/// ```
#[derive(Clone)]
pub struct ModelRegistry {
    providers: BTreeMap<String, Arc<ProviderFn>>,
    env: EnvFn,
}

impl fmt::Debug for ModelRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelRegistry").field("providers", &self.providers()).finish_non_exhaustive()
    }
}

impl Default for ModelRegistry {
    fn default() -> Self {
        Self::with_defaults()
    }
}

impl ModelRegistry {
    /// A registry without providers, reading the process environment.
    pub fn empty() -> Self {
        Self { providers: BTreeMap::new(), env: Arc::new(|key| std::env::var(key).ok()) }
    }

    /// A registry with the `openai`, `ollama` and `offline` providers.
    ///
    /// Without the `openai` feature, `openai/…` and `ollama/…` fail with an
    /// [`Error::InvalidConfig`] that names the missing feature.
    pub fn with_defaults() -> Self {
        let mut registry = Self::empty();
        registry.insert("offline", Arc::new(offline_provider));
        registry.insert("openai", Arc::new(openai_provider));
        registry.insert("ollama", Arc::new(ollama_provider));
        registry
    }

    /// Reads provider variables (`OPENAI_API_KEY`, `OPENAI_BASE_URL`, `OLLAMA_HOST`…) through
    /// `lookup` instead of the process environment: for configuration files, secrets
    /// managers and tests.
    #[must_use]
    pub fn with_env_lookup(mut self, lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        self.env = Arc::new(lookup);
        self
    }

    fn insert(&mut self, prefix: &str, constructor: Arc<ProviderFn>) {
        self.providers.insert(prefix.to_owned(), constructor);
    }

    /// Registers `constructor` for `prefix` (case-insensitive), replacing any previous one.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if `prefix` is empty or contains `/` or whitespace.
    pub fn register<F>(&mut self, prefix: &str, constructor: F) -> Result<()>
    where
        F: Fn(&ModelSpec<'_>) -> Result<Arc<dyn ChatModel>> + Send + Sync + 'static,
    {
        let prefix = prefix.trim().to_ascii_lowercase();
        if prefix.is_empty() || prefix.contains('/') || prefix.contains(char::is_whitespace) {
            return Err(Error::InvalidConfig {
                reason: format!("provider prefix `{prefix}` must be non-empty, without `/` or spaces"),
            });
        }
        self.insert(&prefix, Arc::new(constructor));
        Ok(())
    }

    /// The registered prefixes, sorted.
    pub fn providers(&self) -> Vec<&str> {
        self.providers.keys().map(String::as_str).collect()
    }

    /// Builds the model `spec` names, e.g. `openai/gpt-4o-mini`, `ollama/llama3`, `offline`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an empty spec, an unknown provider (the message lists the
    /// known ones), or whatever the provider rejects (a missing model name, a missing API key
    /// for OpenAI, a bad URL).
    pub fn get(&self, spec: &str) -> Result<Arc<dyn ChatModel>> {
        let spec = spec.trim();
        let (provider, model) = spec.split_once('/').unwrap_or((spec, ""));
        let provider = provider.to_ascii_lowercase();
        if provider.is_empty() {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "model spec `{spec}` names no provider: write `provider/model`, e.g. `openai/gpt-4o-mini`"
                ),
            });
        }
        let Some(constructor) = self.providers.get(&provider) else {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "unknown model provider `{provider}` in `{spec}`; known providers: {}",
                    self.providers().join(", ")
                ),
            });
        };
        constructor(&ModelSpec { spec, provider: &provider, model: model.trim(), env: &self.env })
    }

    /// Builds the embedder `spec` names, reading variables through this registry's lookup:
    ///
    /// | spec | embedder |
    /// |---|---|
    /// | `offline` or `offline/<anything>` | [`LexicalEmbedder`] (lexical, not semantic: see its docs) |
    /// | `openai/<model>` | [`OpenAiEmbedder`](crate::OpenAiEmbedder) with `OPENAI_API_KEY` and `OPENAI_BASE_URL`; OpenAI's `text-embedding-3-small`, `-3-large`, `ada-002` |
    /// | `ollama/<model>` | [`OpenAiEmbedder`](crate::OpenAiEmbedder) at `OLLAMA_HOST`; `nomic-embed-text`, `mxbai-embed-large`, `all-minilm` |
    ///
    /// Other models need their vector length: build an [`OpenAiEmbedder`](crate::OpenAiEmbedder)
    /// with [`with_model_dimensions`](crate::OpenAiEmbedderBuilder::with_model_dimensions).
    /// Embedder providers are fixed; [`register`](Self::register) adds chat models only.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an unknown provider, a missing model name, a model whose
    /// vector length is unknown, or what [`OpenAiEmbedderBuilder::build`](crate::OpenAiEmbedderBuilder::build) refuses.
    pub fn get_embedder(&self, spec: &str) -> Result<Arc<dyn Embedder>> {
        let spec = spec.trim();
        let (provider, model) = spec.split_once('/').unwrap_or((spec, ""));
        let provider = provider.to_ascii_lowercase();
        let spec = ModelSpec { spec, provider: &provider, model: model.trim(), env: &self.env };
        match provider.as_str() {
            "offline" => Ok(Arc::new(LexicalEmbedder::default())),
            "openai" | "ollama" => network_embedder(&spec),
            _ => Err(Error::InvalidConfig {
                reason: format!(
                    "unknown embedder provider `{provider}` in `{}`; known: offline, ollama, openai",
                    spec.spec
                ),
            }),
        }
    }
}

/// The vector lengths of embedding models commonly served by Ollama.
#[cfg(feature = "openai")]
const OLLAMA_EMBEDDING_DIMENSIONS: &[(&str, usize)] =
    &[("nomic-embed-text", 768), ("mxbai-embed-large", 1024), ("all-minilm", 384)];

#[cfg(feature = "openai")]
fn network_embedder(spec: &ModelSpec<'_>) -> Result<Arc<dyn Embedder>> {
    let model = spec.require_model()?;
    let builder = crate::OpenAiEmbedder::builder(model).with_id(spec.spec()).with_env_lookup(Arc::clone(spec.env));
    let builder = if spec.provider() == "ollama" {
        let name = model.split(':').next().unwrap_or(model);
        let known = OLLAMA_EMBEDDING_DIMENSIONS.iter().find(|(known, _)| *known == name).map(|(_, d)| *d);
        let builder = builder.with_base_url(ollama_base_url(spec.env("OLLAMA_HOST").as_deref())).with_api_key("ollama");
        match known {
            Some(dimensions) => builder.with_model_dimensions(dimensions),
            None => builder,
        }
    } else {
        builder
    };
    Ok(Arc::new(builder.build()?))
}

#[cfg(not(feature = "openai"))]
fn network_embedder(spec: &ModelSpec<'_>) -> Result<Arc<dyn Embedder>> {
    Err(Error::InvalidConfig { reason: format!("`{}` needs the `openai` feature of lgadk-llm", spec.spec()) })
}

fn global() -> &'static RwLock<ModelRegistry> {
    static GLOBAL: OnceLock<RwLock<ModelRegistry>> = OnceLock::new();
    GLOBAL.get_or_init(|| RwLock::new(ModelRegistry::with_defaults()))
}

/// Builds a model from the process-wide registry: `openai/gpt-4o-mini`, `ollama/llama3`,
/// `offline`, or any prefix added with [`register_provider`].
///
/// ```
/// let model = lgadk_llm::get_model("offline")?;
/// assert_eq!(model.id(), "offline");
/// assert!(lgadk_llm::get_model("nope/x").is_err());
/// # Ok::<(), lgadk_core::Error>(())
/// ```
///
/// # Errors
/// As [`ModelRegistry::get`].
pub fn get_model(spec: &str) -> Result<Arc<dyn ChatModel>> {
    let registry = global().read().unwrap_or_else(PoisonError::into_inner).clone();
    registry.get(spec)
}

/// Builds an embedder from the process-wide registry's environment: `offline` (lexical),
/// `openai/text-embedding-3-small`, `ollama/nomic-embed-text`; see
/// [`ModelRegistry::get_embedder`].
///
/// ```
/// let embedder = lgadk_llm::get_embedder("offline")?;
/// assert_eq!((embedder.id(), embedder.dimensions()), ("offline/lexical", 256));
/// assert!(lgadk_llm::get_embedder("nope/x").is_err());
/// # Ok::<(), lgadk_core::Error>(())
/// ```
///
/// # Errors
/// As [`ModelRegistry::get_embedder`].
pub fn get_embedder(spec: &str) -> Result<Arc<dyn Embedder>> {
    let registry = global().read().unwrap_or_else(PoisonError::into_inner).clone();
    registry.get_embedder(spec)
}

/// Adds (or replaces) a provider prefix in the process-wide registry used by [`get_model`].
///
/// # Errors
/// As [`ModelRegistry::register`].
pub fn register_provider<F>(prefix: &str, constructor: F) -> Result<()>
where
    F: Fn(&ModelSpec<'_>) -> Result<Arc<dyn ChatModel>> + Send + Sync + 'static,
{
    global().write().unwrap_or_else(PoisonError::into_inner).register(prefix, constructor)
}

#[expect(clippy::unnecessary_wraps, reason = "must match the provider constructor signature")]
fn offline_provider(spec: &ModelSpec<'_>) -> Result<Arc<dyn ChatModel>> {
    Ok(Arc::new(OfflineModel::new().with_id(spec.spec())))
}

#[cfg(feature = "openai")]
/// Turns `OLLAMA_HOST` (`host`, `host:port`, `http://host:port`, with or without `/v1`) into the
/// OpenAI-compatible base URL; a bare host gets Ollama's port 11434, as the Ollama CLI does.
pub(crate) fn ollama_base_url(host: Option<&str>) -> String {
    let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else {
        return OLLAMA_BASE_URL.to_owned();
    };
    let host = host.trim_end_matches('/');
    let mut url = if host.contains("://") {
        host.to_owned()
    } else {
        let (authority, path) = host.split_once('/').map_or((host, ""), |(a, p)| (a, p));
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.ends_with(':') && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let port = if has_port { "" } else { ":11434" };
        let path = if path.is_empty() { String::new() } else { format!("/{path}") };
        format!("http://{authority}{port}{path}")
    };
    if !url.ends_with("/v1") {
        url.push_str("/v1");
    }
    url
}

#[cfg(feature = "openai")]
fn openai_provider(spec: &ModelSpec<'_>) -> Result<Arc<dyn ChatModel>> {
    let model = spec.require_model()?;
    let env = Arc::clone(spec.env);
    let built = crate::OpenAiModel::builder(model).with_id(spec.spec()).with_env_lookup(env).build()?;
    Ok(Arc::new(built))
}

#[cfg(feature = "openai")]
fn ollama_provider(spec: &ModelSpec<'_>) -> Result<Arc<dyn ChatModel>> {
    let model = spec.require_model()?;
    let base_url = ollama_base_url(spec.env("OLLAMA_HOST").as_deref());
    // Ollama ignores the key; an explicit one keeps OPENAI_API_KEY from being sent to it.
    let built = crate::OpenAiModel::builder(model)
        .with_id(spec.spec())
        .with_base_url(base_url)
        .with_api_key("ollama")
        .with_legacy_max_tokens()
        .build()?;
    Ok(Arc::new(built))
}

#[cfg(not(feature = "openai"))]
fn openai_provider(spec: &ModelSpec<'_>) -> Result<Arc<dyn ChatModel>> {
    Err(Error::InvalidConfig { reason: format!("`{}` needs the `openai` feature of lgadk-llm", spec.spec()) })
}

#[cfg(not(feature = "openai"))]
fn ollama_provider(spec: &ModelSpec<'_>) -> Result<Arc<dyn ChatModel>> {
    openai_provider(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(vars: &[(&'static str, &'static str)]) -> ModelRegistry {
        let vars = vars.to_vec();
        ModelRegistry::with_defaults()
            .with_env_lookup(move |key| vars.iter().find(|(k, _)| *k == key).map(|(_, v)| (*v).to_owned()))
    }

    fn reason(err: Error) -> String {
        match err {
            Error::InvalidConfig { reason } => reason,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn unknown_provider_lists_the_known_ones_sorted() {
        let r = registry(&[]);
        let msg = reason(r.get("anthropic/claude").unwrap_err());
        assert!(msg.contains("`anthropic`") && msg.ends_with("known providers: offline, ollama, openai"), "{msg}");
        assert!(reason(r.get("").unwrap_err()).contains("names no provider"));
        assert!(reason(r.get("/gpt").unwrap_err()).contains("names no provider"));
    }

    #[test]
    fn offline_resolves_with_and_without_a_model_part() {
        let r = registry(&[]);
        assert_eq!(r.get("offline").unwrap().id(), "offline");
        assert_eq!(r.get("OFFLINE/demo").unwrap().id(), "OFFLINE/demo");
    }

    #[test]
    fn custom_prefixes_register_and_bad_prefixes_are_rejected() {
        let mut r = registry(&[]);
        r.register("Mine", |spec| Ok(Arc::new(OfflineModel::new().with_id(spec.model())) as Arc<dyn ChatModel>))
            .unwrap();
        assert_eq!(r.get("mine/a/b").unwrap().id(), "a/b");
        assert_eq!(r.providers(), ["mine", "offline", "ollama", "openai"]);
        for bad in ["", "a/b", "a b"] {
            assert!(matches!(r.register(bad, |_| unreachable!()), Err(Error::InvalidConfig { .. })), "{bad}");
        }
    }

    #[cfg(feature = "openai")]
    #[test]
    fn ollama_host_is_normalised() {
        assert_eq!(ollama_base_url(None), "http://localhost:11434/v1");
        assert_eq!(ollama_base_url(Some(" ")), "http://localhost:11434/v1");
        assert_eq!(ollama_base_url(Some("0.0.0.0")), "http://0.0.0.0:11434/v1");
        assert_eq!(ollama_base_url(Some("gpu-box:8080")), "http://gpu-box:8080/v1");
        assert_eq!(ollama_base_url(Some("https://ollama.example.com/")), "https://ollama.example.com/v1");
        assert_eq!(ollama_base_url(Some("http://127.0.0.1:11434/v1")), "http://127.0.0.1:11434/v1");
    }

    #[cfg(feature = "openai")]
    #[test]
    fn openai_needs_a_key_and_a_model_but_local_urls_do_not_need_a_key() {
        let msg = reason(registry(&[]).get("openai/gpt-4o-mini").unwrap_err());
        assert!(msg.contains("OPENAI_API_KEY"), "{msg}");
        assert!(reason(registry(&[("OPENAI_API_KEY", "sk")]).get("openai").unwrap_err()).contains("names no model"));
        let ok = registry(&[("OPENAI_API_KEY", "sk-test")]).get("openai/gpt-4o-mini").unwrap();
        assert_eq!(ok.id(), "openai/gpt-4o-mini");
        let local = registry(&[("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")]).get("openai/qwen").unwrap();
        assert_eq!(local.id(), "openai/qwen");
        let bad =
            reason(registry(&[("OPENAI_BASE_URL", "ftp://x"), ("OPENAI_API_KEY", "k")]).get("openai/m").unwrap_err());
        assert!(bad.contains("ftp://x"), "{bad}");
        assert_eq!(registry(&[]).get("ollama/llama3").unwrap().id(), "ollama/llama3");
    }

    #[cfg(feature = "openai")]
    #[test]
    fn embedders_resolve_by_spec_with_known_vector_lengths() {
        let r = registry(&[("OPENAI_API_KEY", "sk-test")]);
        assert_eq!(r.get_embedder("offline").unwrap().id(), "offline/lexical");
        let openai = r.get_embedder("openai/text-embedding-3-small").unwrap();
        assert_eq!((openai.id(), openai.dimensions()), ("openai/text-embedding-3-small", 1536));
        let ollama = r.get_embedder("ollama/nomic-embed-text:latest").unwrap();
        assert_eq!(ollama.dimensions(), 768);
        assert!(reason(r.get_embedder("ollama/my-own-model").unwrap_err()).contains("with_model_dimensions"));
        assert!(reason(r.get_embedder("openai").unwrap_err()).contains("names no model"));
        assert!(reason(r.get_embedder("acme/x").unwrap_err()).contains("known: offline, ollama, openai"));
        let keyless = reason(registry(&[]).get_embedder("openai/text-embedding-3-small").unwrap_err());
        assert!(keyless.contains("OPENAI_API_KEY"), "{keyless}");
    }

    #[cfg(not(feature = "openai"))]
    #[test]
    fn network_providers_name_the_missing_feature() {
        assert!(reason(registry(&[]).get("openai/gpt-4o-mini").unwrap_err()).contains("`openai` feature"));
    }
}

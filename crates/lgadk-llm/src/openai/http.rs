//! The HTTP transport under async-openai: TLS setup and a retry-free tower service.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;

use super::failure::{ProviderFailure, retry_after};

/// Installs rustls' `ring` crypto provider once per process, before any reqwest client exists.
///
/// reqwest is built without a default provider (so that aws-lc is not compiled); without this
/// call it panics on its first client. An application that installed a provider already keeps it.
pub(crate) fn install_crypto_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // `Err` means another provider is installed already, which serves just as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Sends each request once, and turns a non-success answer into a [`ProviderFailure`] that
/// keeps the status and the `Retry-After` header (async-openai's own error drops the headers).
///
/// Installing it with `with_http_service` also replaces async-openai's built-in retry layer,
/// so the model's own retry loop is the only one and request counts are exact.
#[derive(Debug, Clone)]
pub(crate) struct HttpService {
    client: reqwest::Client,
}

impl HttpService {
    pub(crate) fn new(client: reqwest::Client) -> Self {
        Self { client }
    }
}

type HttpFuture = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send + 'static>>;

impl tower_service::Service<HttpRequestFactory> for HttpService {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = HttpFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move {
            let request = factory.build().await?;
            let response = client.execute(request).await.map_err(OpenAIError::Reqwest)?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let wait = retry_after(response.headers());
            let body = response.bytes().await.map_err(OpenAIError::Reqwest)?;
            Err(OpenAIError::Boxed(Box::new(ProviderFailure::from_status(status.as_u16(), wait, &body))))
        })
    }
}

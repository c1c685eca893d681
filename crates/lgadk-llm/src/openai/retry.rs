//! [`RetryPolicy`]: how often and how patiently [`OpenAiModel`](super::OpenAiModel) and
//! [`OpenAiEmbedder`](super::OpenAiEmbedder) retry, and the loop both run their requests in.

use std::future::Future;
use std::time::Duration;

use super::failure::ProviderFailure;

/// Retries with jittered exponential backoff, for answers that say "later" and for requests
/// that never left.
///
/// Retried: rate limits (429 other than an exhausted quota), server errors (5xx, including
/// 529 overloaded) and failures to connect, where the request was never sent. Not retried by
/// default: a connection that broke **after** the request was sent
/// ([`ConnectionLost`](lgadk_core::ModelErrorKind::ConnectionLost)), because a completion is
/// not idempotent and the server may already be generating (and billing) the first one; turn
/// that on with [`with_retry_after_send`](Self::with_retry_after_send). Never retried: other
/// 4xx answers, undecodable bodies, timeouts (they bound the caller's wait) and a stream once
/// it has started (only the request that opens it).
///
/// Retry `n` (0-based) waits `min(base_delay · 2ⁿ, max_delay)`, shortened by a random 0–25 %
/// so that many clients do not retry in lockstep. When the server sends `Retry-After` (or
/// OpenAI's `retry-after-ms`) that wait is used instead, capped at `max_retry_after`.
///
/// ```
/// use std::time::Duration;
/// use lgadk_llm::RetryPolicy;
///
/// let policy = RetryPolicy::default().with_max_retries(2).with_base_delay(Duration::from_millis(10));
/// assert_eq!(policy.max_retries, 2);
/// assert!(!policy.retry_after_send);
/// assert!(policy.backoff(0, None) <= Duration::from_millis(10));
/// assert_eq!(policy.backoff(0, Some(Duration::from_secs(600))), policy.max_retry_after);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt (so at most `max_retries + 1` requests). Default 3.
    pub max_retries: u32,
    /// Wait before the first retry, doubled for each further one. Default 500 ms.
    pub base_delay: Duration,
    /// Upper bound of the exponential wait. Default 8 s.
    pub max_delay: Duration,
    /// Upper bound of a wait the server asks for with `Retry-After`. Default 60 s.
    pub max_retry_after: Duration,
    /// Also retry when the connection broke after the request was sent. Default `false`: the
    /// server may have processed the first request, so a retry can cost a second completion.
    pub retry_after_send: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
            retry_after_send: false,
        }
    }
}

impl RetryPolicy {
    /// No retries: every failure is returned at once.
    pub fn none() -> Self {
        Self { max_retries: 0, ..Self::default() }
    }

    /// Sets the number of retries after the first attempt.
    #[must_use]
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Sets the wait before the first retry.
    #[must_use]
    pub fn with_base_delay(mut self, base_delay: Duration) -> Self {
        self.base_delay = base_delay;
        self
    }

    /// Sets the upper bound of the exponential wait.
    #[must_use]
    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// Sets the upper bound of a server-requested `Retry-After` wait.
    #[must_use]
    pub fn with_max_retry_after(mut self, max_retry_after: Duration) -> Self {
        self.max_retry_after = max_retry_after;
        self
    }

    /// Whether to retry when the connection broke after the request was sent (default `false`).
    ///
    /// Turn it on for servers where a duplicated completion costs less than a failed call, for
    /// example a local model behind a proxy that drops idle connections.
    #[must_use]
    pub fn with_retry_after_send(mut self, retry_after_send: bool) -> Self {
        self.retry_after_send = retry_after_send;
        self
    }

    /// The wait before retry `retry` (0 for the first retry), given the server's `Retry-After`.
    pub fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.max_retry_after);
        }
        let factor = 2_u32.checked_pow(retry).unwrap_or(u32::MAX);
        let exponential = self.base_delay.saturating_mul(factor).min(self.max_delay);
        exponential.mul_f64(1.0 - 0.25 * fastrand::f64())
    }
}

fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// Runs `attempt` until it succeeds, fails for good, or `policy`'s retries are used up.
pub(crate) async fn with_retries<T, F, Fut>(policy: &RetryPolicy, mut attempt: F) -> Result<T, ProviderFailure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderFailure>>,
{
    let mut retry = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(failure) if retry < policy.max_retries && failure.retry_now(policy.retry_after_send) => {
                let delay = policy.backoff(retry, failure.retry_after());
                retry += 1;
                tracing::debug!(
                    retry,
                    delay_ms = millis(delay),
                    status = ?failure.status(),
                    kind = %failure.kind(),
                    "retrying model call"
                );
                tokio::time::sleep(delay).await;
            }
            Err(failure) => return Err(failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let policy = RetryPolicy::default()
            .with_base_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_millis(350));
        for _ in 0..50 {
            let first = policy.backoff(0, None);
            assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(100), "{first:?}");
            let second = policy.backoff(1, None);
            assert!(second >= Duration::from_millis(150) && second <= Duration::from_millis(200), "{second:?}");
            assert!(policy.backoff(40, None) <= Duration::from_millis(350));
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let policy = RetryPolicy::default().with_max_retry_after(Duration::from_secs(5));
        assert_eq!(policy.backoff(3, Some(Duration::from_secs(2))), Duration::from_secs(2));
        assert_eq!(policy.backoff(0, Some(Duration::from_secs(30))), Duration::from_secs(5));
        assert_eq!(RetryPolicy::none().max_retries, 0);
    }
}

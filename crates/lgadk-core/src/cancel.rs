//! [`CancelToken`]: a run's cancellation, checked with a flag or awaited as a future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

/// A cancellation shared by everything one run does: clones observe the same token.
///
/// Long work checks [`is_cancelled`](Self::is_cancelled) between steps, or races its future
/// against [`cancelled`](Self::cancelled) (the tool loop does this for running tools). The
/// token needs no runtime: waiting is a plain future.
///
/// ```
/// use lgadk_core::CancelToken;
///
/// let token = CancelToken::new();
/// let seen_by_a_tool = token.clone();
/// assert!(!seen_by_a_tool.is_cancelled());
/// token.cancel();
/// assert!(seen_by_a_tool.is_cancelled());
/// ```
#[derive(Clone, Default)]
pub struct CancelToken(Arc<Inner>);

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    /// Waiting futures, by slot; a dropped future frees its slot.
    waiters: Mutex<Vec<Option<Waker>>>,
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken").field("cancelled", &self.is_cancelled()).finish()
    }
}

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels the run: every clone reports it and every [`cancelled`](Self::cancelled)
    /// future completes. Cancelling twice does nothing more.
    pub fn cancel(&self) {
        if self.0.cancelled.swap(true, Ordering::AcqRel) {
            return;
        }
        let waiters = std::mem::take(&mut *self.0.waiters.lock().unwrap_or_else(PoisonError::into_inner));
        waiters.into_iter().flatten().for_each(Waker::wake);
    }

    /// Whether the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Acquire)
    }

    /// A future that completes once the run is cancelled (at once if it already is).
    pub fn cancelled(&self) -> Cancelled {
        Cancelled { token: self.clone(), slot: None }
    }
}

/// The future [`CancelToken::cancelled`] returns.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Cancelled {
    token: CancelToken,
    slot: Option<usize>,
}

impl Future for Cancelled {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.token.is_cancelled() {
            return Poll::Ready(());
        }
        let mut waiters = this.token.0.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked again under the lock: `cancel` sets the flag before it takes the waiters.
        if this.token.is_cancelled() {
            return Poll::Ready(());
        }
        match this.slot {
            Some(slot) if slot < waiters.len() => waiters[slot] = Some(cx.waker().clone()),
            _ => {
                let free = waiters.iter().position(Option::is_none);
                let slot = free.unwrap_or(waiters.len());
                if slot == waiters.len() {
                    waiters.push(None);
                }
                waiters[slot] = Some(cx.waker().clone());
                this.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl Drop for Cancelled {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let mut waiters = self.token.0.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(waiter) = waiters.get_mut(slot) {
                *waiter = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiting_future_completes_when_the_token_is_cancelled() {
        let token = CancelToken::new();
        let waiter = tokio::spawn({
            let token = token.clone();
            async move { token.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        token.cancel();
        waiter.await.unwrap();
        // Already cancelled: completes at once.
        token.cancelled().await;
    }

    #[test]
    fn dropped_futures_free_their_slots() {
        let token = CancelToken::new();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..100 {
            let mut fut = token.cancelled();
            assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        }
        assert_eq!(token.0.waiters.lock().unwrap().len(), 1);
    }
}

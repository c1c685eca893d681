//! Calls that need a Tokio runtime, made outside one, fail with `Error::NoRuntime` instead of
//! panicking inside Tokio.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use lgadk_core::{Error, SessionStore};
use lgadk_session::RedisStore;
use lgadk_session::testing::RedisServer;

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` to completion on this thread, with no Tokio runtime around it.
fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

#[test]
fn redis_calls_outside_a_runtime_are_a_typed_error() {
    let Some(server) = RedisServer::start() else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let store = runtime.block_on(RedisStore::builder(server.url()).connect()).unwrap();
    let id = runtime.block_on(store.create(Default::default())).unwrap().id;
    // The runtime still runs (the connection's driver lives on it); this thread is not in it.
    let err = block_on(store.get(&id)).unwrap_err();
    assert!(matches!(err, Error::NoRuntime { .. }), "{err:?}");
    assert!(runtime.block_on(store.get(&id)).unwrap().is_some(), "inside the runtime it works");
}

//! The bulkhead: a bound on one operator's calls in flight and on the queue
//! in front of them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use crate::slots::Slots;

/// Bounds calls of one operator: at most `max_in_flight` run, at most
/// `max_queue` wait; beyond that a call fails at once with `overloaded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bulkhead {
    pub(crate) max_in_flight: usize,
    pub(crate) max_queue: usize,
}

impl Default for Bulkhead {
    /// 16 in flight, 64 queued.
    fn default() -> Self {
        Bulkhead {
            max_in_flight: 16,
            max_queue: 64,
        }
    }
}

impl Bulkhead {
    /// Calls running at once. Default: 16.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// Calls waiting for a slot. Default: 64.
    pub fn max_queue(mut self, max: usize) -> Self {
        self.max_queue = max;
        self
    }
}

/// Why the bulkhead did not let a call in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Every slot is taken and the queue is full.
    Full,
    /// The call waited in the queue for all the time it had.
    TimedOut,
}

/// A call let in: its slot, and how long it queued for it.
#[derive(Debug)]
pub(crate) struct Entered {
    _permit: OwnedSemaphorePermit,
    pub(crate) queued_for: Option<Duration>,
}

/// One operator's bulkhead: the slots of its configuration (made anew when
/// the configuration changes) and the length of its queue.
#[derive(Debug, Default)]
pub(crate) struct BulkheadState {
    slots: Mutex<Option<(Bulkhead, Slots)>>,
    queued: AtomicUsize,
}

/// Leaves the queue when dropped, a cancelled call included.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl BulkheadState {
    fn slots(&self, config: &Bulkhead) -> Slots {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match &*slots {
            Some((current, current_slots)) if current == config => current_slots.clone(),
            _ => {
                let fresh = Slots::new(config.max_in_flight);
                *slots = Some((config.clone(), fresh.clone()));
                fresh
            }
        }
    }

    /// Lets a call in under `config`: at once when a slot is free, else
    /// after waiting in the queue for at most `patience`. `while_queued`
    /// is called when the call joins the queue and what it returns is held
    /// until the call leaves it (a metrics gauge, say).
    pub(crate) async fn enter<G>(
        &self,
        config: &Bulkhead,
        patience: Duration,
        while_queued: impl FnOnce() -> G,
    ) -> Result<Entered, Refused> {
        let slots = self.slots(config);
        if let Some(permit) = slots.try_acquire_owned() {
            return Ok(Entered {
                _permit: permit,
                queued_for: None,
            });
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= config.max_queue {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Full);
        }
        let _queued = Queued(&self.queued);
        let _held = while_queued();
        let queued_at = tokio::time::Instant::now();
        match tokio::time::timeout(patience, slots.acquire_owned()).await {
            Ok(permit) => Ok(Entered {
                _permit: permit,
                queued_for: Some(queued_at.elapsed()),
            }),
            Err(_elapsed) => Err(Refused::TimedOut),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_bulkhead_queues_then_refuses() {
        let config = Bulkhead::default().max_in_flight(1).max_queue(1);
        let state = BulkheadState::default();
        let long = Duration::from_secs(60);
        let first = state
            .enter(&config, long, || ())
            .await
            .expect("a free slot");
        assert_eq!(first.queued_for, None);
        let waiting = state.enter(&config, long, || ());
        tokio::pin!(waiting);
        assert!(poll_once(waiting.as_mut()).await.is_none(), "queued");
        assert_eq!(
            state.enter(&config, long, || ()).await.err(),
            Some(Refused::Full),
            "the queue holds one"
        );
        drop(first);
        let second = waiting.await.expect("the slot was freed");
        assert!(second.queued_for.is_some());
        assert_eq!(
            state
                .enter(&config, Duration::from_millis(5), || ())
                .await
                .err(),
            Some(Refused::TimedOut)
        );
    }

    /// Polls `future` once.
    async fn poll_once<F: Future + Unpin>(mut future: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| match Pin::new(&mut future).poll(cx) {
            Poll::Ready(output) => Poll::Ready(Some(output)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }
}

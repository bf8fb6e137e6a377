//! Counting semaphores that are never closed: waiting for a slot cannot
//! fail, so no caller has an error path for it.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};

/// `count` slots; a permit holds one until it is dropped.
///
/// The semaphore inside is private and `close` is never called on it,
/// which is the only way tokio's `acquire` fails.
#[derive(Debug, Clone)]
pub(crate) struct Slots(Arc<Semaphore>);

impl Slots {
    /// `count` slots; a count past tokio's bound (about 2^61) is taken as
    /// the bound, which no number of tasks can reach.
    pub(crate) fn new(count: usize) -> Self {
        Slots(Arc::new(Semaphore::new(count.min(Semaphore::MAX_PERMITS))))
    }

    /// Waits for a slot.
    pub(crate) async fn acquire(&self) -> SemaphorePermit<'_> {
        match self.0.acquire().await {
            Ok(permit) => permit,
            Err(_closed) => unreachable!("xcs never closes a slot semaphore"),
        }
    }

    /// A slot if one is free now, borrowed.
    pub(crate) fn try_acquire(&self) -> Option<SemaphorePermit<'_>> {
        self.0.try_acquire().ok()
    }

    /// Waits for a slot, held by a permit that owns the semaphore.
    pub(crate) async fn acquire_owned(&self) -> OwnedSemaphorePermit {
        match self.0.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_closed) => unreachable!("xcs never closes a slot semaphore"),
        }
    }

    /// A slot if one is free now.
    pub(crate) fn try_acquire_owned(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}

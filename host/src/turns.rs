//! Turns on the processor: at most `count` guests execute at once, the
//! others wait for a turn, and a guest that has used a whole slice (one
//! epoch tick) hands its turn on and queues again.
//!
//! Without turns, every call the pool admits runs on the async executor at
//! once: 1,000 busy guests on two threads each run a whole tick before they
//! yield, so one whose deadline has passed waits seconds to be polled and
//! interrupted, and so does every other task. With turns, a guest that is
//! not executing is parked on a timer-driven wait, so its deadline ends it
//! on time, and the executor's queue holds only the guests that hold turns.
//!
//! Who gets a freed turn: a guest that has not yet run a whole slice
//! (a call that starts, or resumes after waiting on the host) goes before
//! one that has just used a slice, so a short call is not queued behind
//! every busy guest; but after [`FRESH_IN_A_ROW`] such turns in a row a
//! busy guest gets one, so busy guests are slowed, never stopped.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;

use tokio::sync::oneshot;

/// Fresh turns handed out in a row while busy guests wait, before one of
/// them gets a turn.
pub(crate) const FRESH_IN_A_ROW: u32 = 3;

/// Which queue a guest waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    /// A call starting, or resuming after it waited on the host.
    Fresh,
    /// A guest that has just used a whole slice.
    Busy,
}

/// The turns of one host, shared by its calls.
#[derive(Debug, Clone)]
pub(crate) struct Turns(Arc<Mutex<Queues>>);

#[derive(Debug)]
struct Queues {
    free: usize,
    fresh: VecDeque<oneshot::Sender<Turn>>,
    busy: VecDeque<oneshot::Sender<Turn>>,
    fresh_in_a_row: u32,
}

impl Queues {
    /// The next waiter to hand a turn to, by the rule of the module docs.
    fn next(&mut self) -> Option<oneshot::Sender<Turn>> {
        let busy_first = self.fresh_in_a_row >= FRESH_IN_A_ROW || self.fresh.is_empty();
        if busy_first && let Some(waiter) = self.busy.pop_front() {
            self.fresh_in_a_row = 0;
            return Some(waiter);
        }
        let waiter = self.fresh.pop_front()?;
        if !self.busy.is_empty() {
            self.fresh_in_a_row += 1;
        }
        Some(waiter)
    }

    fn queue(&mut self, priority: Priority) -> &mut VecDeque<oneshot::Sender<Turn>> {
        match priority {
            Priority::Fresh => &mut self.fresh,
            Priority::Busy => &mut self.busy,
        }
    }
}

impl Turns {
    /// `count` turns (at least one).
    pub(crate) fn new(count: usize) -> Turns {
        Turns(Arc::new(Mutex::new(Queues {
            free: count.max(1),
            fresh: VecDeque::new(),
            busy: VecDeque::new(),
            fresh_in_a_row: 0,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Queues> {
        // The lock is never held across code that can panic; a poisoned
        // lock still holds consistent queues.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a turn. Cancel-safe: a turn handed to a wait that was
    /// dropped goes to the next waiter.
    pub(crate) async fn take(&self, priority: Priority) -> Turn {
        let receiver = {
            let mut queues = self.lock();
            if queues.free > 0 {
                queues.free -= 1;
                return Turn {
                    turns: Some(self.clone()),
                };
            }
            let (sender, receiver) = oneshot::channel();
            let queue = queues.queue(priority);
            // Waits that were dropped leave closed senders behind; sweep
            // them now and then so that the queue stays as long as the
            // number of guests really waiting.
            if queue.len() >= 64 && queue.len().is_power_of_two() {
                queue.retain(|waiter| !waiter.is_closed());
            }
            queue.push_back(sender);
            receiver
        };
        match receiver.await {
            Ok(turn) => turn,
            // A sender is consumed by a send, or dropped by the sweep once
            // its receiver is gone; this wait holds the queues alive.
            Err(_) => unreachable!("a waiting turn's sender is never dropped unsent"),
        }
    }

    /// Turns free now (for tests).
    #[cfg(test)]
    fn free(&self) -> usize {
        self.lock().free
    }

    /// Hands a returned turn to the next waiter still waiting, or frees it.
    fn give_back(&self) {
        let mut queues = self.lock();
        while let Some(waiter) = queues.next() {
            let turn = Turn {
                turns: Some(self.clone()),
            };
            match waiter.send(turn) {
                Ok(()) => return,
                // That wait was dropped: the turn comes back unsent.
                Err(mut unsent) => unsent.turns = None,
            }
        }
        queues.free += 1;
    }
}

/// One turn; dropping it hands it on.
#[derive(Debug)]
pub(crate) struct Turn {
    /// `None` once the turn was handed on some other way.
    turns: Option<Turns>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(turns) = self.turns.take() {
            turns.give_back();
        }
    }
}

/// Where one call keeps its turn: the call's code, its epoch callback and
/// its host functions hand the turn on and take it again through it.
#[derive(Debug, Clone)]
pub(crate) struct Seat {
    turns: Turns,
    held: Arc<Mutex<Option<Turn>>>,
}

impl Seat {
    /// A seat without a turn yet.
    pub(crate) fn new(turns: Turns) -> Seat {
        Seat {
            turns,
            held: Arc::new(Mutex::new(None)),
        }
    }

    fn held(&self) -> MutexGuard<'_, Option<Turn>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a turn and keeps it in the seat.
    pub(crate) async fn sit(&self, priority: Priority) {
        let turn = self.turns.take(priority).await;
        *self.held() = Some(turn);
    }

    /// Hands the turn on, if the seat holds one.
    pub(crate) fn stand(&self) {
        let turn = self.held().take();
        drop(turn);
    }

    /// What the guest does at the end of a slice: hands its turn on and
    /// waits for another at [`Priority::Busy`] (at once when nobody else
    /// waits), then lets the executor run other tasks.
    pub(crate) fn end_of_slice(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let seat = self.clone();
        Box::pin(async move {
            seat.stand();
            seat.sit(Priority::Busy).await;
            tokio::task::yield_now().await;
        })
    }

    /// Runs `work` (a host function's wait): if it is not ready at once,
    /// the turn is handed on while it waits and taken again at
    /// [`Priority::Fresh`] after.
    pub(crate) async fn away<F: Future>(&self, work: F) -> F::Output {
        let mut work = std::pin::pin!(work);
        if let Poll::Ready(output) = poll_once(work.as_mut()).await {
            return output;
        }
        self.stand();
        let output = work.await;
        self.sit(Priority::Fresh).await;
        output
    }
}

/// Polls `future` once.
async fn poll_once<F: Future>(mut future: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|context| Poll::Ready(future.as_mut().poll(context))).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Priority, Seat, Turns};

    #[tokio::test]
    async fn a_dropped_turn_goes_to_the_next_waiter() {
        let turns = Turns::new(1);
        let first = turns.take(Priority::Fresh).await;
        let waiting = tokio::spawn({
            let turns = turns.clone();
            async move { turns.take(Priority::Fresh).await }
        });
        tokio::task::yield_now().await;
        drop(first);
        let second = waiting.await.expect("the waiter's task");
        assert_eq!(turns.free(), 0, "the turn went to the waiter, not back");
        drop(second);
        assert_eq!(turns.free(), 1);
    }

    #[tokio::test]
    async fn a_cancelled_wait_does_not_lose_the_turn() {
        let turns = Turns::new(1);
        let first = turns.take(Priority::Fresh).await;
        let cancelled =
            tokio::time::timeout(Duration::from_millis(1), turns.take(Priority::Fresh)).await;
        assert!(cancelled.is_err(), "no turn was free");
        drop(first);
        assert_eq!(turns.free(), 1, "the abandoned wait got nothing");
        let _again = turns.take(Priority::Busy).await;
        assert_eq!(turns.free(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_waiters_go_first_but_busy_ones_are_not_starved() {
        let turns = Turns::new(1);
        let held = turns.take(Priority::Fresh).await;
        let (order_sender, mut order) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        // Queued in this order: two busy, then five fresh.
        for (name, priority) in [
            ("busy-1", Priority::Busy),
            ("busy-2", Priority::Busy),
            ("fresh-1", Priority::Fresh),
            ("fresh-2", Priority::Fresh),
            ("fresh-3", Priority::Fresh),
            ("fresh-4", Priority::Fresh),
            ("fresh-5", Priority::Fresh),
        ] {
            let (turns, order_sender) = (turns.clone(), order_sender.clone());
            tasks.push(tokio::spawn(async move {
                let turn = turns.take(priority).await;
                order_sender.send(name).expect("the order is read");
                drop(turn);
            }));
            tokio::task::yield_now().await;
        }
        drop(held);
        for task in tasks {
            task.await.expect("a waiter's task");
        }
        drop(order_sender);
        let mut seen = Vec::new();
        while let Some(name) = order.recv().await {
            seen.push(name);
        }
        assert_eq!(
            seen,
            [
                "fresh-1", "fresh-2", "fresh-3", "busy-1", "fresh-4", "fresh-5", "busy-2"
            ]
        );
    }

    #[tokio::test]
    async fn a_seat_stands_while_its_host_function_waits() {
        let turns = Turns::new(1);
        let seat = Seat::new(turns.clone());
        seat.sit(Priority::Fresh).await;
        assert_eq!(turns.free(), 0);
        let ready = seat.away(async { 7 }).await;
        assert_eq!(ready, 7);
        assert_eq!(turns.free(), 0, "a ready function keeps the turn");
        let other = turns.clone();
        let waited = seat
            .away(async move {
                // Only possible if the seat handed its turn on.
                let turn = other.take(Priority::Fresh).await;
                drop(turn);
                8
            })
            .await;
        assert_eq!(waited, 8);
        assert_eq!(turns.free(), 0, "the seat holds a turn again");
        seat.stand();
        assert_eq!(turns.free(), 1);
    }
}

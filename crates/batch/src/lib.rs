//! Natural batching: concurrent calls of one kind share one round trip once the calls back up.
//!
//! Under a rush hundreds of buyers need the same call at the same moment (the inventory's
//! reserve, the order queue's submit, the shared rate limiter's decision), and most of what such
//! a call costs is per call, not per byte: framing, a syscall, a task wake on both ends, one
//! script run on Redis. A [`Batcher`] lets those calls share one.
//!
//! It never waits to fill a batch (no linger timer, the group-commit rule instead). At most
//! `max_in_flight` sends are out at once; a call that finds a free slot is sent at once, alone,
//! so a quiet system sees no batching at all. Only when every slot is taken do calls queue, and
//! the next free slot sends everything queued (up to `max_size`) together. The batch size
//! follows the load by itself: one at rest, dozens in a stampede.
//!
//! What a batch means is up to its [`Batch`]: it gets the items in arrival order and answers
//! each one, in order. A caller that stopped waiting before its batch left (its future was
//! dropped) is not sent.

use std::{future::Future, pin::Pin, sync::Arc};

use tokio::sync::{mpsc, oneshot, Semaphore};

/// A boxed, sendable future (what [`Batch::send`] returns).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How one kind of call is sent, one item or many at a time.
pub trait Batch: Send + Sync + 'static {
    /// What one caller sends.
    type Item: Send + 'static;
    /// What one caller gets back.
    type Answer: Send + 'static;

    /// Sends these items (in arrival order; one or more) and answers each, in the same order.
    fn send(&self, items: Vec<Self::Item>) -> BoxFuture<Vec<Self::Answer>>;

    /// The answer of a call that got none: the batch answered too few items, or the batcher
    /// is gone (shutting down).
    fn lost() -> Self::Answer;
}

/// How far calls of one kind are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct BatchConfig {
    /// Sends out at once; when all are out, new calls queue for the next batch.
    pub max_in_flight: usize,
    /// Most items in one batch; 1 turns batching off (every call is sent alone).
    pub max_size: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        // Measured on the 2-core machine (docs/benchmarks.md): 4 in flight left the accept
        // rush waiting for slots, 16–64 were alike; 32 leaves room for several instances.
        Self {
            max_in_flight: 32,
            max_size: 128,
        }
    }
}

/// One queued call and where its answer goes.
struct Pending<B: Batch> {
    item: B::Item,
    reply: oneshot::Sender<B::Answer>,
}

/// The calling side of one kind of call's batching; cheap to clone. Its worker task stops
/// when the last clone is dropped.
pub struct Batcher<B: Batch> {
    queue: mpsc::Sender<Pending<B>>,
}

impl<B: Batch> Clone for Batcher<B> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<B: Batch> std::fmt::Debug for Batcher<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field(
                "queued",
                &(self.queue.max_capacity() - self.queue.capacity()),
            )
            .finish()
    }
}

impl<B: Batch> Batcher<B> {
    /// Starts the worker of `batch` on the current tokio runtime.
    pub fn spawn(batch: B, config: BatchConfig) -> Self {
        let max_size = config.max_size.max(1);
        let (queue, pending) = mpsc::channel(max_size.saturating_mul(8).max(64));
        tokio::spawn(run(
            Arc::new(batch),
            pending,
            Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            max_size,
        ));
        Self { queue }
    }

    /// Sends `item` alone or in the next batch, and waits for its answer.
    pub async fn call(&self, item: B::Item) -> B::Answer {
        let (reply, answer) = oneshot::channel();
        if self.queue.send(Pending { item, reply }).await.is_err() {
            return B::lost();
        }
        answer.await.unwrap_or_else(|_| B::lost())
    }

    /// Calls queued and not yet taken by a batch (for tests and diagnostics).
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

/// The worker: takes the next call, waits for a free slot, takes whatever else queued meanwhile
/// and sends it all on a task of its own.
async fn run<B: Batch>(
    batch: Arc<B>,
    mut queue: mpsc::Receiver<Pending<B>>,
    slots: Arc<Semaphore>,
    max_size: usize,
) {
    while let Some(first) = queue.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut pending = Vec::with_capacity(max_size.min(queue.len() + 1));
        pending.push(first);
        while pending.len() < max_size {
            match queue.try_recv() {
                Ok(p) => pending.push(p),
                Err(_) => break,
            }
        }
        // A caller that stopped waiting is not sent.
        pending.retain(|p| !p.reply.is_closed());
        if pending.is_empty() {
            continue;
        }
        let (items, replies): (Vec<_>, Vec<_>) =
            pending.into_iter().map(|p| (p.item, p.reply)).unzip();
        let sent = batch.send(items);
        tokio::spawn(async move {
            let mut answers = sent.await.into_iter();
            for reply in replies {
                // The caller may have stopped waiting; nobody is left to tell.
                let _ = reply.send(answers.next().unwrap_or_else(B::lost));
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    //! The batching logic over a scripted batch (no network): alone when a slot is free, in one
    //! batch when every slot is taken, answers to the right callers, batches never over the cap.

    use parking_lot::Mutex;

    use super::*;

    /// Doubles each number; records the size of every send; the first send waits for `gate`.
    #[derive(Default)]
    struct Doubler {
        sizes: Mutex<Vec<usize>>,
        gate: Mutex<Option<oneshot::Receiver<()>>>,
        started: tokio::sync::Notify,
        short_by_one: bool,
    }

    impl Batch for Arc<Doubler> {
        type Item = u32;
        type Answer = Option<u32>;

        fn send(&self, items: Vec<u32>) -> BoxFuture<Vec<Option<u32>>> {
            let this = Arc::clone(self);
            Box::pin(async move {
                this.sizes.lock().push(items.len());
                this.started.notify_one();
                let gate = this.gate.lock().take();
                if let Some(gate) = gate {
                    let _ = gate.await;
                }
                let mut answers: Vec<Option<u32>> = items.iter().map(|n| Some(n * 2)).collect();
                if this.short_by_one && items.len() > 1 {
                    answers.pop();
                }
                answers
            })
        }

        fn lost() -> Option<u32> {
            None
        }
    }

    /// Holds the only slot with one call (answered 2 × 1000), queues `n` more (0..n), then
    /// opens the gate; returns the queued calls' answers. `max_size` caps the batches.
    async fn queued_behind_one(doubler: Arc<Doubler>, n: u32, max_size: usize) -> Vec<Option<u32>> {
        let (open, gate) = oneshot::channel();
        *doubler.gate.lock() = Some(gate);
        let batcher = Batcher::spawn(
            Arc::clone(&doubler),
            BatchConfig {
                max_in_flight: 1,
                max_size,
            },
        );
        let first = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.call(1000).await }
        });
        doubler.started.notified().await;
        let mut queued = Vec::new();
        for i in 0..n {
            let batcher = batcher.clone();
            queued.push(tokio::spawn(async move { batcher.call(i).await }));
        }
        // Every queued call is queued before the slot frees: in the channel, or the first of
        // them already taken by the worker, which waits for the slot.
        while batcher.queued() < n as usize - 1 {
            tokio::task::yield_now().await;
        }
        let _ = open.send(());
        assert_eq!(first.await.unwrap(), Some(2000));
        let mut answers = Vec::new();
        for q in queued {
            answers.push(q.await.unwrap());
        }
        answers
    }

    #[tokio::test]
    async fn a_call_finding_a_free_slot_goes_alone() {
        let doubler = Arc::new(Doubler::default());
        let batcher = Batcher::spawn(Arc::clone(&doubler), BatchConfig::default());
        for n in 0..5 {
            assert_eq!(batcher.call(n).await, Some(n * 2));
        }
        assert_eq!(*doubler.sizes.lock(), vec![1; 5]);
    }

    #[tokio::test]
    async fn calls_queued_behind_a_full_slot_go_in_one_batch_each_answered() {
        let doubler = Arc::new(Doubler::default());
        let answers = queued_behind_one(Arc::clone(&doubler), 20, 128).await;
        assert_eq!(*doubler.sizes.lock(), vec![1, 20]);
        assert_eq!(answers, (0..20).map(|i| Some(i * 2)).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn batches_never_exceed_max_size() {
        let doubler = Arc::new(Doubler::default());
        let answers = queued_behind_one(Arc::clone(&doubler), 20, 8).await;
        assert_eq!(answers, (0..20).map(|i| Some(i * 2)).collect::<Vec<_>>());
        assert_eq!(*doubler.sizes.lock(), vec![1, 8, 8, 4]);
    }

    #[tokio::test]
    async fn an_item_the_batch_did_not_answer_gets_the_lost_answer() {
        let doubler = Arc::new(Doubler {
            short_by_one: true,
            ..Doubler::default()
        });
        let answers = queued_behind_one(Arc::clone(&doubler), 5, 128).await;
        assert_eq!(answers, vec![Some(0), Some(2), Some(4), Some(6), None]);
    }
}

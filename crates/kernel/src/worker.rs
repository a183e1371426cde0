//! Named background tasks.
//!
//! A service assembles itself into the part that answers requests and the work it does on its
//! own (a queue consumer, an expiry sweeper, a reconciler). It hands the latter to its host as
//! [`Workers`]: each task with a name, so the host can stop them after the server has drained and
//! log which one did not stop in time.

use std::{fmt, future::Future, time::Duration};

use tokio::task::JoinHandle;

/// One background task of a service.
pub struct Worker {
    /// What it does, for logs (`order.consumer`, `inventory.reconciler`).
    pub name: &'static str,
    /// The running task.
    pub task: JoinHandle<()>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker").field("name", &self.name).finish()
    }
}

impl Worker {
    /// Spawns `work` on the runtime under `name`.
    pub fn spawn(name: &'static str, work: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            name,
            task: tokio::spawn(work),
        }
    }

    /// Adopts a task already running.
    pub fn adopt(name: &'static str, task: JoinHandle<()>) -> Self {
        Self { name, task }
    }
}

/// The background tasks of one or more services.
#[derive(Debug, Default)]
pub struct Workers(Vec<Worker>);

impl Workers {
    /// No workers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one.
    pub fn push(&mut self, worker: Worker) {
        self.0.push(worker);
    }

    /// Their names, in the order they were added.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|w| w.name).collect()
    }

    /// Waits for every worker to end (they were told to stop), giving up after `grace`; logs
    /// each one that failed or did not stop in time. Returns the names of those still running.
    pub async fn join(self, grace: Duration) -> Vec<&'static str> {
        let deadline = tokio::time::Instant::now() + grace;
        let mut late = Vec::new();
        for Worker { name, mut task } in self.0 {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(worker = name, error = %e, "worker failed"),
                Err(_) => {
                    tracing::warn!(worker = name, "worker did not stop within the grace period");
                    task.abort();
                    late.push(name);
                }
            }
        }
        late
    }
}

/// The two stops of a hosted service: `server` ends serving (and what a service streams to its
/// clients, such as watches, which would otherwise hold the drain open), `workers` the
/// background tasks, told to stop once the server has drained.
#[derive(Debug, Clone, Default)]
pub struct Stops {
    /// Stops the server and its streams.
    pub server: tokio_util::sync::CancellationToken,
    /// Stops the background workers.
    pub workers: tokio_util::sync::CancellationToken,
}

/// A service as it assembled itself: the part that answers requests, and its background work.
#[derive(Debug)]
pub struct Assembled<S> {
    /// The service (its host turns it into a gRPC server or calls it in process).
    pub service: S,
    /// Its background tasks, stopped by their shutdown token after the service drained.
    pub workers: Workers,
}

impl FromIterator<Worker> for Workers {
    fn from_iter<I: IntoIterator<Item = Worker>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn join_names_the_worker_that_did_not_stop() {
        let stop = CancellationToken::new();
        let polite = stop.clone();
        let workers: Workers = [
            Worker::spawn("polite", async move { polite.cancelled().await }),
            Worker::spawn("stubborn", std::future::pending()),
        ]
        .into_iter()
        .collect();
        assert_eq!(workers.names(), ["polite", "stubborn"]);
        stop.cancel();
        assert_eq!(workers.join(Duration::from_secs(5)).await, ["stubborn"]);
    }
}

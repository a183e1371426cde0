//! Background work on a timer: the services' sweepers, reconcilers and refreshers all run one
//! step every interval until shutdown.
//!
//! A step that overruns its interval delays the next tick instead of firing a burst of catch-up
//! steps, and shutdown is noticed between steps, never in the middle of one.

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

/// Runs `step` every `interval` (the first time at once) until `shutdown` is cancelled.
pub async fn every<F, Fut>(interval: Duration, shutdown: CancellationToken, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        step().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn steps_until_shutdown() {
        let shutdown = CancellationToken::new();
        let steps = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&steps);
        let stop = shutdown.clone();
        let task = tokio::spawn(every(Duration::from_secs(1), shutdown, move || {
            let (counted, stop) = (Arc::clone(&counted), stop.clone());
            async move {
                if counted.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
                    stop.cancel();
                }
            }
        }));
        task.await.unwrap();
        assert_eq!(steps.load(Ordering::SeqCst), 3);
    }
}

//! Blocking work off the async runtime: every store call and every password hash runs on
//! tokio's blocking threads, each kind behind its own bound, so a burst of sign-ins (Argon2id
//! takes tens of milliseconds of CPU each) never stalls the threads that serve the other
//! pages, and never grows without limit.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::store::Store;

/// How many store calls run at once (the store has one connection: more only queue).
const STORE_THREADS: usize = 2;

/// How many sign-ins may wait for a hashing thread before new ones are told to retry.
const HASH_QUEUE: usize = 64;

/// The bounded pools of blocking work.
#[derive(Debug)]
pub(crate) struct Pools {
    store: Arc<Store>,
    store_slots: Semaphore,
    hash_slots: Semaphore,
    hash_queue: Semaphore,
}

/// Why blocking work did not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    /// More sign-ins are waiting for a hashing thread than the queue holds.
    #[error("too many sign-ins are waiting; try again in a second")]
    Busy,
    /// The work panicked (a bug; the log has it).
    #[error("blocking work failed: {0}")]
    Failed(String),
}

impl Pools {
    /// Pools for `store`: hashing gets one thread fewer than the machine has cores (at
    /// least one), so a core is always left for the runtime.
    pub(crate) fn new(store: Arc<Store>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            store,
            store_slots: Semaphore::new(STORE_THREADS),
            hash_slots: Semaphore::new(cores.saturating_sub(1).max(1)),
            hash_queue: Semaphore::new(HASH_QUEUE),
        }
    }

    /// Runs `f` on the store on a blocking thread, at most [`STORE_THREADS`] at once.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let _slot = self
            .store_slots
            .acquire()
            .await
            .map_err(|e| PoolError::Failed(e.to_string()))?;
        self.spawn(f).await
    }

    /// Runs a password check (`f`, which may also touch the store) on a blocking thread, at
    /// most one per spare core at once; [`PoolError::Busy`] when the queue is full.
    pub(crate) async fn hash<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let _queued = self.hash_queue.try_acquire().map_err(|_| PoolError::Busy)?;
        let _slot = self
            .hash_slots
            .acquire()
            .await
            .map_err(|e| PoolError::Failed(e.to_string()))?;
        self.spawn(f).await
    }

    async fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| PoolError::Failed(e.to_string()))
    }
}

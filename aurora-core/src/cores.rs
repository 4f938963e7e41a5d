//! The machine's CPU cores as a budget that locally executed nodes draw from, so that nodes run
//! in parallel only as far as their threads fit the cores (no oversubscription).
//!
//! A node asks for what its plugin's [`Resources`] say (`tasks * cpus_per_task`, or every core
//! for `cpus_per_task = 0`), capped at the budget so that a node larger than the machine still
//! runs, alone. Requests are granted in priority order (the plan's order): a request that does
//! not fit yet holds back those behind it, so a node that needs every core is never starved by a
//! stream of small ones. Oversubscribing a few cores is far worse than leaving one idle for a
//! moment: OpenMP threads spin while they wait, and two two-threaded libtorch processes on two
//! cores run several times slower than the two in turn.

use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex, PoisonError};

use crate::plugin::Resources;

/// Cores that nodes hold while they execute.
#[derive(Debug)]
pub struct CoreBudget {
    total: usize,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug)]
struct State {
    free: usize,
    /// Waiting requests: (priority, cores); the first is served first.
    waiting: BTreeSet<(usize, usize)>,
}

/// Cores held by one node; returned to the budget when dropped.
#[derive(Debug)]
pub struct Grant<'a> {
    budget: &'a CoreBudget,
    cores: usize,
}

impl Grant<'_> {
    /// How many cores this grant holds.
    pub fn cores(&self) -> usize {
        self.cores
    }
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        let mut state = self.budget.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.free += self.cores;
        self.budget.changed.notify_all();
    }
}

impl CoreBudget {
    /// A budget of `total` cores (at least 1); 0 means every core of this machine.
    pub fn new(total: usize) -> Self {
        let total = if total == 0 { machine_cores() } else { total };
        CoreBudget {
            total,
            state: Mutex::new(State { free: total, waiting: BTreeSet::new() }),
            changed: Condvar::new(),
        }
    }

    /// Cores in the budget.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The cores a node with `resources` asks for: all its processes' cores, every core for
    /// `cpus_per_task = 0`, at most the budget.
    pub fn request(&self, resources: &Resources) -> usize {
        match resources.cpus_per_task {
            0 => self.total,
            cpus => (resources.tasks.max(1) as usize).saturating_mul(cpus as usize).min(self.total),
        }
    }

    /// Blocks until `cores` (at most the budget) are free and no request of a lower `priority`
    /// is waiting, then holds them.
    pub fn acquire(&self, priority: usize, cores: usize) -> Grant<'_> {
        let cores = cores.clamp(1, self.total);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let me = (priority, cores);
        state.waiting.insert(me);
        while !(state.waiting.first() == Some(&me) && state.free >= cores) {
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        state.waiting.remove(&me);
        state.free -= cores;
        // The next waiter may fit in what is left.
        self.changed.notify_all();
        Grant { budget: self, cores }
    }
}

/// The cores this process may run on.
pub fn machine_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    const BOUND: Duration = Duration::from_secs(10);

    #[test]
    fn requests_are_sized_from_resources_and_capped_at_the_budget() {
        let budget = CoreBudget::new(4);
        let r = |tasks, cpus_per_task| Resources { tasks, cpus_per_task, ..Resources::default() };
        assert_eq!(budget.request(&r(1, 1)), 1);
        assert_eq!(budget.request(&r(2, 1)), 2);
        assert_eq!(budget.request(&r(1, 0)), 4, "0 = every core");
        assert_eq!(budget.request(&r(4, 2)), 4, "a node larger than the machine runs alone");
        assert_eq!(budget.request(&r(0, 3)), 3, "a node has at least one process");
        assert_eq!(CoreBudget::new(0).total(), machine_cores());
    }

    #[test]
    fn grants_fit_the_budget_and_return_on_drop() {
        let budget = CoreBudget::new(2);
        let a = budget.acquire(0, 1);
        let b = budget.acquire(1, 1);
        assert_eq!((a.cores(), b.cores()), (1, 1));
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let c = budget.acquire(2, 2);
                tx.send(c.cores()).unwrap();
            });
            // Both cores are held: the request for two waits until both are back.
            drop(a);
            assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "granted 2 cores with 1 free");
            drop(b);
            assert_eq!(rx.recv_timeout(BOUND).unwrap(), 2);
        });
        assert_eq!(budget.acquire(0, 99).cores(), 2, "capped at the budget");
    }

    /// A waiting request for every core holds back later small ones, so it cannot starve.
    #[test]
    fn a_large_request_is_not_overtaken_by_later_small_ones() {
        let budget = CoreBudget::new(2);
        let held = budget.acquire(0, 1);
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|scope| {
            let large = tx.clone();
            let budget = &budget;
            scope.spawn(move || {
                let g = budget.acquire(1, 2);
                large.send("large").unwrap();
                drop(g);
            });
            // Wait until the large request is queued before the small one asks.
            let deadline = std::time::Instant::now() + BOUND;
            while budget.state.lock().unwrap().waiting.is_empty() {
                assert!(std::time::Instant::now() < deadline, "the large request never queued");
                std::thread::yield_now();
            }
            let small = tx.clone();
            scope.spawn(move || {
                let _g = budget.acquire(2, 1);
                small.send("small").unwrap();
            });
            assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "the small request overtook the large one");
            drop(held);
            assert_eq!(rx.recv_timeout(BOUND).unwrap(), "large");
            assert_eq!(rx.recv_timeout(BOUND).unwrap(), "small");
        });
    }
}

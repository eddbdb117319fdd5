//! One persistent helper thread that takes half of a large, splittable piece of work.
//!
//! Selection at a large dimension with many arms reads every arm's inverse (at d = 386 and
//! 20 arms, 6 MB of f32): more than one core's L2, so one core streams it from L3. Split in
//! two fixed halves, one on the calling thread and one on this helper, each half fits the L2
//! of the core that reads it, and both cores stream at once.
//!
//! - Only [`join`] uses it, and only for work far larger than the hand-off (a few
//!   microseconds to wake the helper); small problems never call it.
//! - With one core available there is no helper and `join` runs both halves in turn.
//! - One job at a time: a caller that finds the helper busy (another thread's select) runs
//!   both halves itself instead of waiting, and a caller that finishes its half before the
//!   helper has picked the other one up (its core busy with another process) takes it back.
//! - After a `fork` the child has no helper thread; `join` notices the new process id and
//!   runs both halves itself.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Default)]
struct Slot {
    job: Option<Job>,
    /// A caller owns the helper from handing a job over until it has seen it finish.
    claimed: bool,
    finished: bool,
    panicked: bool,
}

struct Helper {
    pid: u32,
    slot: Mutex<Slot>,
    work: Condvar,
    done: Condvar,
}

impl Helper {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        // Jobs run outside the lock and their panics are caught, so it is never poisoned
        // with an inconsistent slot.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self) {
        let mut slot = self.lock();
        loop {
            match slot.job.take() {
                Some(job) => {
                    drop(slot);
                    // The job (and what it borrows) is consumed before `finished` is set.
                    let panicked = catch_unwind(AssertUnwindSafe(job)).is_err();
                    slot = self.lock();
                    slot.finished = true;
                    slot.panicked = panicked;
                    self.done.notify_all();
                }
                None => slot = self.work.wait(slot).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }
}

fn helper() -> Option<&'static Helper> {
    static HELPER: OnceLock<Option<&'static Helper>> = OnceLock::new();
    let helper = *HELPER.get_or_init(|| {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return None;
        }
        let helper: &'static Helper = Box::leak(Box::new(Helper {
            pid: std::process::id(),
            slot: Mutex::new(Slot::default()),
            work: Condvar::new(),
            done: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("conduit-helper".into())
            .stack_size(256 * 1024)
            .spawn(move || helper.run())
            .ok()?;
        Some(helper)
    });
    helper.filter(|h| h.pid == std::process::id())
}

/// Waits for the handed-over job to finish, also when the caller's own half panics: the job
/// borrows the caller's stack, which must outlive it.
struct Wait(&'static Helper);

impl Wait {
    fn finish(self) -> bool {
        let helper = self.0;
        std::mem::forget(self);
        let mut slot = helper.lock();
        if let Some(job) = slot.job.take() {
            // The helper has not started (its core is busy elsewhere): run the job here
            // rather than wait for it to be scheduled.
            drop(slot);
            let panicked = catch_unwind(AssertUnwindSafe(job)).is_err();
            slot = helper.lock();
            slot.finished = true;
            slot.panicked = panicked;
        }
        while !slot.finished {
            slot = helper.done.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
        slot.claimed = false;
        slot.panicked
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        Wait(self.0).finish();
    }
}

/// Runs `a` on the calling thread and `b` on the helper thread at the same time (or both on
/// the calling thread when there is no free helper) and returns both results.
pub fn join<RA, RB>(a: impl FnOnce() -> RA, b: impl FnOnce() -> RB + Send) -> (RA, RB)
where
    RB: Send,
{
    let Some(helper) = helper() else {
        return (a(), b());
    };
    {
        let mut slot = helper.lock();
        if slot.claimed {
            drop(slot);
            return (a(), b());
        }
        slot.claimed = true;
        slot.finished = false;
        slot.panicked = false;
    }
    let mut rb: Option<RB> = None;
    let job: Box<dyn FnOnce() + Send + '_> = Box::new(|| rb = Some(b()));
    // SAFETY: the job borrows `b` and `rb` from this frame. `Wait` blocks until the helper
    // has consumed the job and set `finished`, on the normal path and when `a` unwinds, so
    // the borrows end before this frame does.
    let job: Job = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + '_>, Job>(job) };
    let wait = Wait(helper);
    {
        let mut slot = helper.lock();
        slot.job = Some(job);
        helper.work.notify_one();
    }
    let ra = a();
    if wait.finish() {
        resume_unwind(Box::new("conduit helper thread: the job panicked"));
    }
    (ra, rb.expect("the helper ran the job"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_halves_run_and_borrow_the_callers_data() {
        let data: Vec<u64> = (0..10_000).collect();
        let (lo, hi) = data.split_at(5_000);
        for _ in 0..200 {
            let (a, b) = join(|| lo.iter().sum::<u64>(), || hi.iter().sum::<u64>());
            assert_eq!(a + b, data.iter().sum::<u64>());
        }
    }

    #[test]
    fn concurrent_callers_each_get_their_own_results() {
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..500u64 {
                        let (a, b) = join(|| t * 1000 + i, || t * 1000 + i + 1);
                        assert_eq!(b, a + 1);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("no panic");
        }
    }

    #[test]
    fn a_panicking_half_is_reported_and_the_helper_stays_usable() {
        let caught = catch_unwind(|| join(|| 1, || -> u32 { panic!("boom") }));
        assert!(caught.is_err());
        assert_eq!(join(|| 2, || 3), (2, 3));
    }
}

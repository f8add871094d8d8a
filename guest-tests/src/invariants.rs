//! The shared AIO invariant checker. Pure logic over (obj, data) pairs and
//! synthetic or real `io_event`s, so it is unit-tested on the host.
//!
//! Invariants:
//! 1. no event's `res` is a kernel-internal errno (-530..=-512, e.g.
//!    -ERESTARTSYS, -EIOCBQUEUED) — those must never reach user space;
//! 2. every event's `obj` is the address of an iocb that was submitted and is
//!    still in flight, and its `data` equals that iocb's `aio_data`;
//! 3. every submitted iocb completes exactly once (no duplicates, none
//!    missing when the test finishes).

use std::collections::HashMap;

use crate::aio::IoEvent;
use crate::sys::errno_name;

/// Lowest/highest kernel-internal errno (include/linux/errno.h).
pub const KERNEL_ERRNO_MIN: i64 = 512;
pub const KERNEL_ERRNO_MAX: i64 = 530;

/// Whether `res` is a negated kernel-internal errno that must not leak.
pub fn is_kernel_internal_errno(res: i64) -> bool {
    (-KERNEL_ERRNO_MAX..=-KERNEL_ERRNO_MIN).contains(&res)
}

#[derive(Debug, Default)]
pub struct Tracker {
    /// obj -> aio_data of iocbs submitted and not yet completed.
    pending: HashMap<u64, u64>,
    /// obj -> aio_data of the last completion of that iocb address.
    completed: HashMap<u64, u64>,
    violations: Vec<String>,
    submitted: u64,
    reaped: u64,
    /// iocbs still in flight when the context was destroyed (their events
    /// are discarded by the kernel).
    abandoned: u64,
}

impl Tracker {
    /// Records an iocb the kernel accepted.
    pub fn on_submit(&mut self, obj: u64, data: u64) {
        self.submitted += 1;
        if let Some(old) = self.pending.insert(obj, data) {
            self.violations.push(format!(
                "iocb {obj:#x} submitted again (data={data:#x}) while still in flight (data={old:#x})"
            ));
        }
        self.completed.remove(&obj);
    }

    /// Records a reaped event. Returns true if it matched an in-flight iocb
    /// (whether or not its result is acceptable).
    pub fn on_event(&mut self, ev: &IoEvent) -> bool {
        self.reaped += 1;
        if is_kernel_internal_errno(ev.res) {
            self.violations.push(format!(
                "event obj={:#x} data={:#x}: res={} (-{}) is a kernel-internal errno leaked to user space",
                ev.obj,
                ev.data,
                ev.res,
                errno_name((-ev.res) as i32)
            ));
        }
        match self.pending.get(&ev.obj) {
            Some(&data) if data == ev.data => {
                self.pending.remove(&ev.obj);
                self.completed.insert(ev.obj, data);
                true
            }
            Some(&data) => {
                self.violations.push(format!(
                    "event obj={:#x} has data={:#x}, but that iocb was submitted with data={data:#x}",
                    ev.obj, ev.data
                ));
                false
            }
            None => {
                if self.completed.get(&ev.obj) == Some(&ev.data) {
                    self.violations.push(format!(
                        "duplicate completion: iocb {:#x} (data={:#x}) completed more than once",
                        ev.obj, ev.data
                    ));
                } else {
                    let owner = self
                        .pending
                        .iter()
                        .find(|(_, &d)| d == ev.data)
                        .map(|(o, _)| format!(" (data matches in-flight iocb {o:#x})"))
                        .unwrap_or_default();
                    self.violations.push(format!(
                        "stray event: obj={:#x} data={:#x} res={} matches no submitted iocb{owner}",
                        ev.obj, ev.data, ev.res
                    ));
                }
                false
            }
        }
    }

    /// The context was destroyed: whatever is still pending will never
    /// produce an event. Not a violation (io_destroy discards events).
    pub fn on_destroy(&mut self) {
        self.abandoned += self.pending.len() as u64;
        self.pending.clear();
    }

    /// Violations seen so far (without the "missing" check).
    #[cfg(test)]
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Final check: all violations plus every iocb that never completed.
    pub fn finish(&self) -> Result<(), Vec<String>> {
        let mut v = self.violations.clone();
        let mut missing: Vec<_> = self.pending.iter().collect();
        missing.sort();
        for (obj, data) in missing {
            v.push(format!(
                "missing completion: iocb {obj:#x} (data={data:#x}) was submitted but never completed"
            ));
        }
        if v.is_empty() {
            Ok(())
        } else {
            v.push(format!(
                "({} iocbs submitted, {} events reaped, {} abandoned by io_destroy)",
                self.submitted, self.reaped, self.abandoned
            ));
            Err(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(obj: u64, data: u64, res: i64) -> IoEvent {
        IoEvent {
            data,
            obj,
            res,
            res2: 0,
        }
    }

    #[test]
    fn clean_run_passes() {
        let mut t = Tracker::default();
        t.on_submit(0x1000, 1);
        t.on_submit(0x2000, 2);
        assert!(t.on_event(&ev(0x2000, 2, 4096)));
        assert!(t.on_event(&ev(0x1000, 1, -22)));
        assert_eq!(t.in_flight(), 0);
        assert!(t.finish().is_ok());
    }

    #[test]
    fn kernel_internal_errnos_are_flagged() {
        for res in [-512, -513, -529, -530] {
            let mut t = Tracker::default();
            t.on_submit(0x1000, 7);
            assert!(t.on_event(&ev(0x1000, 7, res)));
            let err = t.finish().unwrap_err();
            assert!(err[0].contains("kernel-internal errno"), "{err:?}");
        }
        assert!(is_kernel_internal_errno(-512));
        assert!(is_kernel_internal_errno(-530));
        assert!(!is_kernel_internal_errno(-511));
        assert!(!is_kernel_internal_errno(-531));
        assert!(!is_kernel_internal_errno(512));
        let mut t = Tracker::default();
        t.on_submit(0x1000, 7);
        t.on_event(&ev(0x1000, 7, -529));
        assert!(t.finish().unwrap_err()[0].contains("EIOCBQUEUED"));
    }

    #[test]
    fn duplicate_completion_is_flagged() {
        let mut t = Tracker::default();
        t.on_submit(0x1000, 1);
        assert!(t.on_event(&ev(0x1000, 1, 10)));
        assert!(!t.on_event(&ev(0x1000, 1, 10)));
        let err = t.finish().unwrap_err();
        assert!(err[0].starts_with("duplicate completion"), "{err:?}");
    }

    #[test]
    fn stray_event_is_flagged() {
        let mut t = Tracker::default();
        t.on_submit(0x1000, 1);
        assert!(!t.on_event(&ev(0x3000, 1, 10)));
        let err = t.finish().unwrap_err();
        assert!(err[0].starts_with("stray event"), "{err:?}");
        assert!(err[0].contains("matches in-flight iocb 0x1000"), "{err:?}");
        // the real one is still missing
        assert!(err[1].starts_with("missing completion"), "{err:?}");
    }

    #[test]
    fn wrong_data_for_obj_is_flagged() {
        let mut t = Tracker::default();
        t.on_submit(0x1000, 1);
        assert!(!t.on_event(&ev(0x1000, 2, 10)));
        let err = t.finish().unwrap_err();
        assert!(err[0].contains("submitted with data=0x1"), "{err:?}");
    }

    #[test]
    fn missing_completion_is_flagged() {
        let mut t = Tracker::default();
        t.on_submit(0x1000, 1);
        t.on_submit(0x2000, 2);
        t.on_event(&ev(0x1000, 1, 0));
        let err = t.finish().unwrap_err();
        assert_eq!(err.len(), 2);
        assert!(err[0].contains("iocb 0x2000"), "{err:?}");
        assert!(err[1].contains("2 iocbs submitted, 1 events reaped"));
    }

    #[test]
    fn destroy_abandons_pending_without_violation() {
        let mut t = Tracker::default();
        t.on_submit(0x1000, 1);
        t.on_submit(0x2000, 2);
        t.on_event(&ev(0x1000, 1, 0));
        t.on_destroy();
        assert!(t.finish().is_ok());
        // a late event for an abandoned iocb is still a stray
        assert!(!t.on_event(&ev(0x2000, 2, 0)));
        assert!(t.finish().is_err());
    }

    #[test]
    fn resubmission_while_in_flight_is_flagged_but_reuse_after_completion_is_fine() {
        let mut t = Tracker::default();
        t.on_submit(0x1000, 1);
        t.on_event(&ev(0x1000, 1, 0));
        t.on_submit(0x1000, 2);
        t.on_event(&ev(0x1000, 2, 0));
        assert!(t.finish().is_ok());

        let mut t = Tracker::default();
        t.on_submit(0x1000, 1);
        t.on_submit(0x1000, 1);
        assert!(t.violations()[0].contains("submitted again"));
    }

    #[test]
    fn empty_tracker_passes() {
        assert!(Tracker::default().finish().is_ok());
    }
}

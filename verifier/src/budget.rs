//! The work one decision may do.
//!
//! Signature checks are CPU-bound and synchronous: an async timeout around
//! them fires only at the next await, which a loop over thousands of
//! signatures never reaches (issue 13: 27 s in `node verify-image` under an
//! 8 s timeout). A [`Budget`] is charged before each hash and each public-key
//! operation, and refuses once its work limit or its deadline is past, so
//! the checks stop themselves wherever they are. Once refused it stays
//! refused: every later charge fails at once, and the decision that owns
//! it is refused with [`Budget::exhausted`]'s reason.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Work units of one public-key operation (about the time to hash 64 KiB).
pub const PER_SIGNATURE: u64 = 64 << 10;
/// Work units of one certificate chain check (a few signatures and parses).
pub const PER_CHAIN: u64 = 8 * PER_SIGNATURE;
/// Signatures read from one envelope (DSSE, bundle, trust bundle); an
/// envelope with more is refused before any is checked.
pub const DEFAULT_MAX_ENVELOPE_SIGNATURES: usize = 16;
/// Work units one decision may spend by default: 1 GiB of hashing
/// equivalent, about half a second of one core.
pub const DEFAULT_MAX_WORK: u64 = 1 << 30;

/// Why a check was stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OverBudget(pub String);

/// What one decision may spend: work units (bytes hashed, plus
/// [`PER_SIGNATURE`] per public-key operation), an optional deadline, and
/// the most signatures taken from one envelope.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    spent: AtomicU64,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    max_envelope_signatures: usize,
    refused: Mutex<Option<(OverBudget, Cause)>>,
}

/// What stopped a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The work limit: a property of the evidence, the same next time.
    Work,
    /// The deadline: maybe the evidence, maybe a slow registry.
    Deadline,
}

impl Budget {
    /// A budget of `limit` work units, with no deadline.
    pub fn new(limit: u64, max_envelope_signatures: usize) -> Budget {
        Budget {
            limit,
            spent: AtomicU64::new(0),
            deadline: None,
            timeout: None,
            max_envelope_signatures,
            refused: Mutex::new(None),
        }
    }

    /// The defaults: [`DEFAULT_MAX_WORK`] and
    /// [`DEFAULT_MAX_ENVELOPE_SIGNATURES`].
    pub fn default_for_one_decision() -> Budget {
        Budget::new(DEFAULT_MAX_WORK, DEFAULT_MAX_ENVELOPE_SIGNATURES)
    }

    /// Also refuses once `timeout` from now has passed.
    pub fn with_timeout(mut self, timeout: Duration) -> Budget {
        self.deadline = Some(Instant::now() + timeout);
        self.timeout = Some(timeout);
        self
    }

    /// The most signatures taken from one envelope.
    pub fn max_envelope_signatures(&self) -> usize {
        self.max_envelope_signatures
    }

    /// Charges `units`; refuses (and stays refused) past the limit or the
    /// deadline.
    pub fn spend(&self, units: u64) -> Result<(), OverBudget> {
        if let Some(why) = self.exhausted() {
            return Err(why);
        }
        let spent = self
            .spent
            .fetch_add(units, Ordering::Relaxed)
            .saturating_add(units);
        let (why, cause) = if spent > self.limit {
            (
                format!(
                    "the verification work limit ({} MiB of hashing equivalent per decision) was reached",
                    self.limit >> 20
                ),
                Cause::Work,
            )
        } else if let (Some(deadline), Some(timeout)) = (self.deadline, self.timeout)
            && Instant::now() >= deadline
        {
            (
                format!(
                    "the decision deadline ({}) passed during signature checks",
                    humantime::format_duration(timeout)
                ),
                Cause::Deadline,
            )
        } else {
            return Ok(());
        };
        let refused = OverBudget(why);
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some((refused.clone(), cause));
        Err(refused)
    }

    /// Why the budget refused, once it has.
    pub fn exhausted(&self) -> Option<OverBudget> {
        self.exhausted_by().map(|(why, _)| why)
    }

    /// Why the budget refused and what stopped it, once it has.
    pub fn exhausted_by(&self) -> Option<(OverBudget, Cause)> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Work units spent so far.
    pub fn spent(&self) -> u64 {
        self.spent.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_and_stays_refused() {
        let b = Budget::new(100, 4);
        assert!(b.spend(60).is_ok());
        assert!(b.exhausted().is_none());
        let e = b.spend(60).unwrap_err();
        assert!(e.0.contains("work limit"), "{e}");
        assert_eq!(b.spend(0).unwrap_err(), e);
        assert_eq!(b.exhausted(), Some(e));
        assert_eq!(b.exhausted_by().map(|(_, c)| c), Some(Cause::Work));
    }

    #[test]
    fn refuses_past_the_deadline() {
        let b = Budget::new(u64::MAX, 4).with_timeout(Duration::ZERO);
        let e = b.spend(1).unwrap_err();
        assert!(e.0.contains("deadline"), "{e}");
        assert_eq!(b.exhausted_by().map(|(_, c)| c), Some(Cause::Deadline));
    }
}

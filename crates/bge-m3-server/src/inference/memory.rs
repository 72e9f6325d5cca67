//! The memory budget of the requests in flight (`--memory-budget-mib`), and giving memory back
//! to the system after large requests.
//!
//! Every request reserves, before it holds it, an estimate of the memory it will hold:
//! - while its body is read and parsed: twice the body (the bytes, then the parsed texts);
//! - before tokenization: an upper bound of its token ids (each text at most `max_length`
//!   tokens, and at most one token per byte);
//! - once tokenized: its token ids and the embeddings it will hold until its answer is written
//!   (`dense`: the vector; `sparse`: the distinct tokens, and their strings when keyed by token;
//!   `colbert`: one vector per token), see [`Cost`].
//!
//! A reservation that does not fit in what is left of the budget is refused at once with 429
//! `memory_full` (`Retry-After: 1`), never queued; one larger than the whole budget could never
//! fit and is a 413 `answer_too_large` that says how to split the request. A reservation is
//! given back when the request is answered, its answer written or its client gone.
//!
//! The allocator keeps what it frees for later use; after a request of [`TRIM_BYTES`] or more,
//! [`trim_soon`] asks glibc to return the free pages to the system (`malloc_trim`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::metrics;

/// The unit of the budget's semaphore: 1 KiB (a `u32` of them is 4 TiB).
const UNIT: u64 = 1024;

/// A reservation that shrinks or ends by at least this much has the allocator trimmed.
pub const TRIM_BYTES: u64 = 32 << 20;

/// The budget: bytes that the requests in flight may hold in all. Cheap to clone.
#[derive(Clone)]
pub struct MemoryBudget {
    semaphore: Arc<Semaphore>,
    total_units: u32,
}

impl MemoryBudget {
    /// A budget of `bytes` (at least 1 KiB, at most 4 TiB).
    pub fn new(bytes: u64) -> Self {
        let total_units = units(bytes).clamp(1, u64::from(u32::MAX)) as u32;
        metrics()
            .memory_budget_bytes
            .set((u64::from(total_units) * UNIT) as i64);
        Self {
            semaphore: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
        }
    }

    /// The whole budget, in bytes.
    pub fn total(&self) -> u64 {
        u64::from(self.total_units) * UNIT
    }

    /// What is reserved now, in bytes.
    pub fn in_use(&self) -> u64 {
        (u64::from(self.total_units) - self.semaphore.available_permits() as u64) * UNIT
    }

    /// An empty reservation, to be grown with [`Reservation::resize`].
    pub fn empty(&self) -> Reservation {
        let permit = self
            .semaphore
            .clone()
            .try_acquire_many_owned(0)
            .expect("the budget's semaphore is never closed");
        Reservation {
            budget: self.clone(),
            permit,
            peak_units: 0,
        }
    }

    /// Reserves `bytes` for `what`, or refuses at once (see [`Reservation::resize`]).
    pub fn reserve(&self, bytes: u64, what: Need) -> Result<Reservation, Refused> {
        let mut reservation = self.empty();
        reservation.resize(bytes, what)?;
        Ok(reservation)
    }
}

impl fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("total", &self.total())
            .field("in_use", &self.in_use())
            .finish()
    }
}

/// A reservation refused: the server answers the first 413 `answer_too_large`, the second 429
/// `memory_full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// More than the whole budget: the request could never be served as it is.
    #[error("{needed} bytes {what:?} is more than the whole memory budget of {budget} bytes")]
    TooLarge {
        needed: u64,
        budget: u64,
        what: Need,
    },
    /// More than what is left of the budget now.
    #[error("{needed} bytes {what:?} do not fit: {in_use} of {budget} bytes are reserved")]
    Full {
        needed: u64,
        in_use: u64,
        budget: u64,
        what: Need,
    },
}

/// What a reservation is for, to say so when it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Reading and parsing a request body.
    Body,
    /// Tokenizing a request's texts.
    Tokens,
    /// A tokenized request: its token ids and its embeddings until the answer is written.
    Answer,
}

/// Bytes of the budget held by one request; given back when dropped.
pub struct Reservation {
    budget: MemoryBudget,
    permit: OwnedSemaphorePermit,
    /// The most this reservation held, in units.
    peak_units: u64,
}

impl Reservation {
    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.permit.num_permits() as u64 * UNIT
    }

    /// Holds `bytes` from now on: gives back what is over, or takes what is missing. Refused
    /// (the reservation unchanged) with 413 `answer_too_large` when `bytes` is more than the
    /// whole budget, and with 429 `memory_full` when it is more than this reservation and what
    /// is left of the budget.
    pub fn resize(&mut self, bytes: u64, what: Need) -> Result<(), Refused> {
        let wanted = units(bytes);
        let held = self.permit.num_permits() as u64;
        if wanted > u64::from(self.budget.total_units) {
            return Err(Refused::TooLarge {
                needed: bytes,
                budget: self.budget.total(),
                what,
            });
        }
        if wanted < held {
            let freed = self
                .permit
                .split((held - wanted) as usize)
                .expect("a reservation gives back at most what it holds");
            drop(freed);
            if (held - wanted) * UNIT >= TRIM_BYTES {
                trim_soon();
            }
        } else if wanted > held {
            let more = self
                .budget
                .semaphore
                .clone()
                .try_acquire_many_owned((wanted - held) as u32)
                .map_err(|_| Refused::Full {
                    needed: bytes,
                    in_use: self.budget.in_use(),
                    budget: self.budget.total(),
                    what,
                })?;
            self.permit.merge(more);
        }
        self.peak_units = self.peak_units.max(wanted);
        metrics()
            .memory_reserved_bytes
            .set(self.budget.in_use() as i64);
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let held = self.permit.num_permits() as u64 * UNIT;
        // The permit itself goes back after this body, with the other fields.
        let in_use = self.budget.in_use().saturating_sub(held);
        metrics().memory_reserved_bytes.set(in_use as i64);
        if held >= TRIM_BYTES || self.peak_units * UNIT >= TRIM_BYTES {
            trim_soon();
        }
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("bytes", &self.bytes())
            .finish()
    }
}

/// Bytes rounded up to units.
fn units(bytes: u64) -> u64 {
    bytes.div_ceil(UNIT)
}

/// Estimates of what a request holds, in bytes, from its shape, beside what the model says its
/// outputs hold ([`bge_m3_core::BgeM3::output_bytes`]).
pub(crate) struct Cost;

impl Cost {
    /// One token id, and the overhead of one sequence of them.
    pub const ID: u64 = 4;
    pub const SEQUENCE: u64 = 64;
    /// The overhead of one vector or string (a `Vec` and its allocation).
    pub const VECTOR: u64 = 48;
    /// One token of a `/tokenize` answer until it is written.
    pub const TOKEN: u64 = std::mem::size_of::<bge_m3_core::TextToken>() as u64;
    /// The serialization buffer of one streamed answer.
    pub const ANSWER_BUFFER: u64 = 256 << 10;

    /// The upper bound of the token ids of `texts` truncated at `max_length`: one token per
    /// byte at most (plus `<s>`, `</s>` and the SentencePiece word marker).
    pub fn ids_bound<S: AsRef<str>>(texts: &[S], max_length: usize) -> u64 {
        texts
            .iter()
            .map(|t| Self::ID * (t.as_ref().len() + 3).min(max_length.max(2)) as u64)
            .sum::<u64>()
            + Self::SEQUENCE * texts.len() as u64
    }

    /// A tokenized sequence of `len` ids, held until its forward pass.
    pub fn sequence(len: usize) -> u64 {
        Self::SEQUENCE + Self::ID * len as u64
    }

    /// Texts held until their answer is written (`/tokenize` quotes them).
    pub fn texts(texts: &[String]) -> u64 {
        texts.iter().map(|t| Self::VECTOR + t.len() as u64).sum()
    }

    /// One text's `tokens` in a `/tokenize` answer.
    pub fn text_tokens(tokens: usize) -> u64 {
        Self::VECTOR + Self::TOKEN * tokens as u64
    }

    /// The most tokens `/tokenize` finds in `text`: one per byte (plus the SentencePiece word
    /// marker, and `<s>` and `</s>` when added). Characters that Unicode normalisation expands
    /// (the ligature ﷺ) can exceed it: the reservation is corrected as each chunk is done.
    pub fn text_tokens_bound(text: &str, add_special_tokens: bool) -> u64 {
        Self::text_tokens(text.len() + 1 + if add_special_tokens { 2 } else { 0 })
    }

    /// One text decoded by `/decode`, held until its answer is written.
    pub fn decoded(text: &str) -> u64 {
        Self::VECTOR + text.len() as u64
    }

    /// A list of ids waiting to be decoded.
    pub fn ids(ids: &[u32]) -> u64 {
        Self::VECTOR + Self::ID * ids.len() as u64
    }
}

/// Asks the allocator to give its free memory back to the system, on a thread of its own, once
/// at a time: glibc keeps freed memory in its arenas for reuse, and after a large request that
/// is hundreds of megabytes no later request needs.
pub fn trim_soon() {
    static TRIMMING: AtomicBool = AtomicBool::new(false);
    if TRIMMING.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("bge-m3-trim".into())
        .spawn(|| {
            // Let the request's last buffers go first (its answer, its connection's buffers).
            std::thread::sleep(std::time::Duration::from_millis(200));
            trim();
            TRIMMING.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        TRIMMING.store(false, Ordering::Release);
    }
}

/// Gives the allocator's free memory back to the system now (glibc's `malloc_trim`, which
/// walks every arena); nothing elsewhere.
#[allow(unsafe_code)] // malloc_trim(3)
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free memory of the allocator; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_grow_shrink_and_go_back() {
        let budget = MemoryBudget::new(10 * UNIT);
        let mut a = budget.reserve(3 * UNIT, Need::Body).unwrap();
        assert_eq!(budget.in_use(), 3 * UNIT);
        // Rounded up to whole units.
        let b = budget.reserve(1, Need::Tokens).unwrap();
        assert_eq!(b.bytes(), UNIT);
        a.resize(8 * UNIT, Need::Answer)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(budget.in_use(), 9 * UNIT);
        let refused = budget.reserve(2 * UNIT, Need::Answer).unwrap_err();
        assert!(matches!(refused, Refused::Full { .. }), "{refused:?}");
        // A refused resize leaves the reservation as it was.
        assert!(a.resize(10 * UNIT, Need::Answer).is_err());
        assert_eq!(a.bytes(), 8 * UNIT);
        a.resize(2 * UNIT, Need::Answer).unwrap();
        assert_eq!(budget.in_use(), 3 * UNIT);
        drop(b);
        drop(a);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn more_than_the_whole_budget_is_413_not_429() {
        let budget = MemoryBudget::new(10 * UNIT);
        let refused = budget.reserve(11 * UNIT, Need::Answer).unwrap_err();
        assert!(matches!(refused, Refused::TooLarge { .. }), "{refused:?}");
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn costs_count_ids_and_tokens() {
        // The bound before tokenization: at most one token per byte, and `max_length`.
        assert_eq!(
            Cost::ids_bound(&["abc"], 8192),
            6 * Cost::ID + Cost::SEQUENCE
        );
        assert_eq!(
            Cost::ids_bound(&["abcdefgh"], 4),
            4 * Cost::ID + Cost::SEQUENCE
        );
        assert_eq!(Cost::sequence(5), Cost::SEQUENCE + 5 * Cost::ID);
        // `/tokenize`: 16 bytes a token; `abc` is at most `<s> ▁ a b c </s>`.
        assert_eq!(Cost::TOKEN, 16);
        assert_eq!(
            Cost::text_tokens_bound("abc", true),
            Cost::VECTOR + 6 * Cost::TOKEN
        );
        assert_eq!(
            Cost::text_tokens_bound("abc", false),
            Cost::VECTOR + 4 * Cost::TOKEN
        );
        assert_eq!(Cost::texts(&["ab".into(), "".into()]), 2 * Cost::VECTOR + 2);
    }
}

//! Buffers whose first element starts a cache line.
//!
//! The products read and write whole rows of their activations in 64-byte accesses (AMX's
//! tile rows, AVX-512's stores; AVX2's are 32 bytes). The allocator promises 16-byte alignment
//! only, so a buffer may start 16, 32 or 48 bytes into a cache line, and from there every such
//! access straddles two lines. Rows whose length is a multiple of 16 floats (every BGE-M3
//! width) all start lines when their buffer does: measured side by side, the int8 pass with the
//! AMX kernel took 5-12% less CPU time with its activations in these buffers than in plain
//! `Vec`s; at 8192 tokens the f32 pass went from 1.04x its CPU time before the unsafe rules,
//! attention's scores in a `Vec`, to 0.98x with them in one of these (docs/BENCHMARKS.md).

use std::ops::{Deref, DerefMut};

/// Bytes in a cache line.
const LINE: usize = 64;

/// A buffer of `len` elements of `T` whose first element starts a cache line: a `Vec` with room
/// to move the start up to the first line boundary in it. Reads as a slice.
#[derive(Debug, Default)]
pub(crate) struct Aligned<T> {
    buffer: Vec<T>,
    /// Where the elements start in `buffer`.
    start: usize,
    len: usize,
}

impl<T> Aligned<T> {
    /// No elements, and nothing allocated (usable in a `const` thread-local).
    pub(crate) const fn empty() -> Self {
        Self {
            buffer: Vec::new(),
            start: 0,
            len: 0,
        }
    }

    /// Elements allocated (0 while nothing is), as `Vec::capacity`.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buffer.capacity()
    }
}

impl<T: Copy + Default> Aligned<T> {
    /// `len` elements of `T::default()`.
    pub(crate) fn new(len: usize) -> Self {
        let mut aligned = Self::empty();
        aligned.resize(len);
        aligned
    }

    /// A copy of `values`.
    #[cfg(test)]
    pub(crate) fn from_slice(values: &[T]) -> Self {
        let mut aligned = Self::new(values.len());
        aligned.copy_from_slice(values);
        aligned
    }

    /// Makes it `len` elements long, as `Vec::resize` does: the first ones keep their values,
    /// new ones are `T::default()`.
    pub(crate) fn resize(&mut self, len: usize) {
        if self.start + len <= self.buffer.len() {
            let old = self.len;
            self.len = len;
            if len > old {
                self[old..].fill(T::default());
            }
            return;
        }
        // Elements that may precede the first boundary.
        let slack = LINE / std::mem::size_of::<T>().max(1);
        let buffer = vec![T::default(); len + slack];
        // A start that is not a boundary (`align_offset` may decline to find one) only costs speed.
        let start = buffer.as_ptr().align_offset(LINE).min(slack);
        let mut grown = Self { buffer, start, len };
        grown[..self.len].copy_from_slice(self);
        *self = grown;
    }
}

impl<T> Deref for Aligned<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.buffer[self.start..self.start + self.len]
    }
}

impl<T> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buffer[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts_a_line<T>(values: &[T]) -> bool {
        (values.as_ptr() as usize).is_multiple_of(LINE)
    }

    #[test]
    fn elements_start_a_line_whatever_their_type() {
        for len in [1, 15, 16, 17, 1000] {
            assert!(starts_a_line(&Aligned::<f32>::new(len)), "{len} f32");
            assert!(starts_a_line(&Aligned::<u8>::new(len)), "{len} u8");
            assert!(starts_a_line(&Aligned::<u16>::new(len)), "{len} u16");
            assert_eq!(Aligned::<f32>::new(len).len(), len);
        }
        // No element, nothing to align (and nothing allocated).
        assert!(Aligned::<f32>::new(0).is_empty());
        assert!(Aligned::<f32>::default().is_empty());
    }

    #[test]
    fn resizing_keeps_values_as_a_vec_does() {
        let mut aligned = Aligned::<u16>::new(3);
        aligned.copy_from_slice(&[1, 2, 3]);
        aligned.resize(2);
        assert_eq!(&aligned[..], [1, 2]);
        // Within the room it has: the element given back comes back as default.
        aligned.resize(3);
        assert_eq!(&aligned[..], [1, 2, 0]);
        // Past it: a new buffer, still starting a line, with the old values.
        aligned.resize(500);
        assert!(starts_a_line(&aligned));
        assert_eq!(&aligned[..4], [1, 2, 0, 0]);
        assert!(aligned[3..].iter().all(|&v| v == 0));
        assert_eq!(aligned.len(), 500);
    }
}

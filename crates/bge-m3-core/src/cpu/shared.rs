//! One output buffer, written by parallel tasks in disjoint parts.

use std::marker::PhantomData;

/// A buffer of `f32` borrowed mutably for `'a` and shared by tasks on several threads, each of
/// which writes its own elements (its columns of a matrix product, its rows of a head).
///
/// Bounds are checked here; what each user proves (in the comment on its unsafe block) is only that no
/// two tasks touch the same element.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<'a> {
    ptr: *mut f32,
    len: usize,
    _buffer: PhantomData<&'a mut [f32]>,
}

// SAFETY: a `SharedMut` is the address of a buffer borrowed mutably for `'a` (so nothing outside
// the tasks accesses it); tasks reach its elements only through `part` and `ptr_at`, whose
// callers promise that each element is accessed by one task at a time. `f32` is `Send`.
unsafe impl Send for SharedMut<'_> {}
// SAFETY: as for `Send`: shared references hand out only the address, under the same promise.
unsafe impl Sync for SharedMut<'_> {}

impl<'a> SharedMut<'a> {
    pub(crate) fn new(buffer: &'a mut [f32]) -> Self {
        Self {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            _buffer: PhantomData,
        }
    }

    /// The address of element `offset`, having checked that `extent` elements from there lie
    /// in the buffer. Accesses through it are the caller's to keep to those elements and to
    /// its task.
    pub(crate) fn ptr_at(&self, offset: usize, extent: usize) -> *mut f32 {
        assert!(
            offset <= self.len && extent <= self.len - offset,
            "elements {offset}..+{extent} of a buffer of {}",
            self.len
        );
        self.ptr.wrapping_add(offset)
    }

    /// Elements `offset..offset + len`, which must lie in the buffer (checked).
    ///
    /// # Safety
    /// Nothing else accesses these elements while the slice lives: no other task's part
    /// overlaps this one.
    pub(crate) unsafe fn part(&self, offset: usize, len: usize) -> &'a mut [f32] {
        let ptr = self.ptr_at(offset, len);
        // SAFETY: `ptr_at` checked that the `len` elements lie in the buffer, which is borrowed
        // mutably for `'a`; the caller promises that nothing else accesses them meanwhile.
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_the_elements_asked_for() {
        let mut buffer: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let shared = SharedMut::new(&mut buffer);
        // SAFETY: the two parts are disjoint, and nothing else touches the buffer.
        let a = unsafe { shared.part(2, 3) };
        // SAFETY: as above.
        let b = unsafe { shared.part(9, 1) };
        a.fill(-1.0);
        b[0] = 100.0;
        assert_eq!(
            buffer,
            [0.0, 1.0, -1.0, -1.0, -1.0, 5.0, 6.0, 7.0, 8.0, 100.0]
        );
    }

    #[test]
    #[should_panic(expected = "elements 8..+3 of a buffer of 10")]
    fn a_part_past_the_end_is_refused() {
        let mut buffer = vec![0.0; 10];
        let shared = SharedMut::new(&mut buffer);
        // SAFETY: the only part taken (the call panics before making it).
        let _ = unsafe { shared.part(8, 3) };
    }
}

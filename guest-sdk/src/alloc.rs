//! The allocator of lean builds (`wasm32-unknown-unknown`, no WASI).
//!
//! Every call runs in a fresh instance, so what matters is the first
//! allocations of a young memory. Rust's allocator on this target grows the
//! memory on its first allocation (by at least 64 KiB): a `memory.grow` in
//! every call, which costs the host a limiter check and a change of page
//! protections, more than a small operator's whole work. The linker leaves
//! the end of the initial memory free after the data
//! (`__heap_base..__heap_end`, about 50 KiB for the examples): this
//! allocator hands that out first, bump-style, and only then lets dlmalloc
//! grow the memory. A block freed at the top of the bump region is reused;
//! others there are not (the region is small and the instance short-lived).

#![allow(
    unsafe_code,
    reason = "a global allocator is unsafe by contract; the region it hands out is the linker's"
)]

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::{Cell, UnsafeCell};
use core::ptr;

use dlmalloc::{Allocator, Dlmalloc};

unsafe extern "C" {
    static __heap_base: u8;
    static __heap_end: u8;
}

/// Bump allocation in the initial memory's free end, then dlmalloc.
pub(crate) struct Lean {
    /// The next free byte of the bump region; 0 before the first use.
    next: Cell<usize>,
    dlmalloc: UnsafeCell<Dlmalloc<Grow>>,
}

// SAFETY: this target has no threads (the allocator is only compiled
// without the `atomics` target feature), so nothing is ever shared.
unsafe impl Sync for Lean {}

impl Lean {
    pub(crate) const fn new() -> Lean {
        Lean {
            next: Cell::new(0),
            dlmalloc: UnsafeCell::new(Dlmalloc::new_with_allocator(Grow)),
        }
    }

    /// The bump region, `[start, end)`.
    fn region() -> (usize, usize) {
        // Only the addresses of the linker's symbols are taken.
        (
            ptr::addr_of!(__heap_base) as usize,
            ptr::addr_of!(__heap_end) as usize,
        )
    }

    fn in_region(pointer: *mut u8) -> bool {
        let (start, end) = Self::region();
        (start..end).contains(&(pointer as usize))
    }

    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        let (start, end) = Self::region();
        let next = match self.next.get() {
            0 => start,
            next => next,
        };
        let aligned = next.checked_next_multiple_of(layout.align())?;
        let top = aligned.checked_add(layout.size())?;
        if top > end {
            return None;
        }
        self.next.set(top);
        Some(aligned as *mut u8)
    }

    fn dlmalloc(&self) -> *mut Dlmalloc<Grow> {
        self.dlmalloc.get()
    }
}

unsafe impl GlobalAlloc for Lean {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            Some(pointer) => pointer,
            // SAFETY: one thread; `layout` is what the caller gave.
            None => unsafe { (*self.dlmalloc()).malloc(layout.size(), layout.align()) },
        }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if Self::in_region(pointer) {
            // The top block goes back to the bump region; others stay.
            if pointer as usize + layout.size() == self.next.get() {
                self.next.set(pointer as usize);
            }
        } else {
            // SAFETY: `pointer` came from dlmalloc with `layout`.
            unsafe { (*self.dlmalloc()).free(pointer, layout.size(), layout.align()) }
        }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !Self::in_region(pointer) {
            // SAFETY: `pointer` came from dlmalloc with `layout`.
            return unsafe {
                (*self.dlmalloc()).realloc(pointer, layout.size(), layout.align(), new_size)
            };
        }
        let (_, end) = Self::region();
        let top = pointer as usize + layout.size();
        // The top block grows or shrinks in place while it fits.
        if top == self.next.get()
            && let Some(new_top) = (pointer as usize).checked_add(new_size)
            && new_top <= end
        {
            self.next.set(new_top);
            return pointer;
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        // SAFETY: `new_layout` has the caller's alignment and a size the
        // caller asked for.
        let moved = unsafe { self.alloc(new_layout) };
        if !moved.is_null() {
            // SAFETY: both blocks are live and distinct, and at least the
            // smaller size long.
            unsafe {
                ptr::copy_nonoverlapping(pointer, moved, layout.size().min(new_size));
                self.dealloc(pointer, layout);
            }
        }
        moved
    }
}

/// dlmalloc's system allocator: grows the memory, never touches the bump
/// region (dlmalloc's own wasm allocator may hand that region out too).
struct Grow;

const PAGE: usize = 64 * 1024;

// SAFETY: every region returned is fresh memory from `memory.grow`, owned
// by dlmalloc from then on.
unsafe impl Allocator for Grow {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        let pages = size.div_ceil(PAGE);
        let previous = wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return (ptr::null_mut(), 0, 0);
        }
        let base = previous * PAGE;
        let size = pages * PAGE;
        // A region ending at the top of the address space would make a
        // pointer one past its end wrap to 0: leave its last bytes out.
        if base.wrapping_add(size) == 0 {
            return (base as *mut u8, size - 16, 0);
        }
        (base as *mut u8, size, 0)
    }

    fn remap(&self, _: *mut u8, _: usize, _: usize, _: bool) -> *mut u8 {
        ptr::null_mut()
    }

    fn free_part(&self, _: *mut u8, _: usize, _: usize) -> bool {
        false
    }

    fn free(&self, _: *mut u8, _: usize) -> bool {
        false
    }

    fn can_release_part(&self, _: u32) -> bool {
        false
    }

    fn allocates_zeros(&self) -> bool {
        true
    }

    fn page_size(&self) -> usize {
        PAGE
    }
}

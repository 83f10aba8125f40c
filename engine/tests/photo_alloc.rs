//! Oversized photos are refused from their header alone: no buffer anywhere near the declared
//! size is allocated. A counting allocator (this test binary only) records the largest single
//! allocation made by the decoding thread.
#![cfg(not(target_arch = "wasm32"))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use brivl_engine::photo::{decode, PhotoError};

struct Tracking;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: the thread-locals may be gone while a thread shuts down.
    let _ = ON.try_with(|on| {
        if on.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

fn largest_allocation_while<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    ON.with(|on| on.set(true));
    let out = f();
    ON.with(|on| on.set(false));
    (out, LARGEST.with(|l| l.get()))
}

#[test]
fn photo_huge_header_allocates_nothing_big() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/photos/");
    let list = std::fs::read_to_string(format!("{dir}huge.tsv")).unwrap();
    for line in list.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (name, w, h) = (cols[0], cols[1].parse::<u32>().unwrap(), cols[2].parse::<u32>().unwrap());
        let bytes = std::fs::read(format!("{dir}{name}")).unwrap();
        let (result, largest) = largest_allocation_while(|| decode(&bytes));
        match result {
            Err(PhotoError::TooLarge { width, height, .. }) => assert_eq!((width, height), (w, h), "{name}"),
            other => panic!("{name}: expected TooLarge, got {other:?}"),
        }
        // Header parsing may copy the file (a few KB) and build small tables; the pixel buffer
        // the header asks for would be gigabytes.
        eprintln!("{name}: declared {w}x{h}, largest allocation {largest} bytes");
        assert!(largest < 1 << 20, "{name}: allocated {largest} bytes before refusing");
    }
}

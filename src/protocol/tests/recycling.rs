//! The decoder reads bulk frames into buffers it reuses once the frames in them are gone. Its own
//! test binary, because it counts allocations with a global allocator (address reuse by the
//! system allocator would make a pointer comparison pass without any recycling).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use luminaguard_protocol::frame::encode_frame;
use luminaguard_protocol::message::Request;
use luminaguard_protocol::{FrameCodec, Incoming, MAX_FRAME_LEN};
use tokio_util::codec::Decoder;

const CHUNK: usize = 200 << 10;

/// Counts allocations of at least a chunk's size.
struct Counting;

static BIG_ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= CHUNK {
            BIG_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= CHUNK {
            BIG_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn bulk_read_buffers_are_recycled_only_when_free() {
    const FRAMES: u8 = 40;
    let mut wire = Vec::new();
    for b in 1..=FRAMES {
        let mut frame = BytesMut::new();
        encode_frame(
            u64::from(b),
            &Request::Input(vec![b; CHUNK].into()),
            &mut frame,
            MAX_FRAME_LEN,
        )
        .unwrap();
        wire.push(frame.freeze());
    }
    let mut wire: VecDeque<Bytes> = wire.into();
    let mut codec = FrameCodec::<Request, ()>::default();
    let mut buf = BytesMut::with_capacity(64 << 10);
    // Reads the way `FramedRead` does: at most the buffer's spare capacity at a time.
    let mut next = |buf: &mut BytesMut| loop {
        if let Some(Incoming::Frame(f)) = codec.decode(buf).unwrap() {
            let Request::Input(data) = f.body else {
                panic!("not input")
            };
            return data;
        }
        buf.reserve(1);
        let front = wire.front_mut().unwrap();
        let n = front.len().min(64 << 10).min(buf.capacity() - buf.len());
        buf.extend_from_slice(&front.split_to(n));
        if front.is_empty() {
            wire.pop_front();
        }
    };
    let before = BIG_ALLOCS.load(Ordering::Relaxed);
    // The consumer holds the two latest frames, as a file writer working through a queue would.
    let mut held: VecDeque<Bytes> = VecDeque::new();
    for b in 1..=FRAMES {
        let data = next(&mut buf);
        assert!(data.iter().all(|&x| x == b), "frame {b} corrupted");
        for (i, h) in held.iter().enumerate() {
            let want = b - held.len() as u8 + i as u8;
            assert!(
                h.iter().all(|&x| x == want),
                "held frame {want} overwritten"
            );
        }
        held.push_back(data);
        if held.len() > 2 {
            held.pop_front();
        }
    }
    let allocs = BIG_ALLOCS.load(Ordering::Relaxed) - before;
    assert!(
        allocs <= 5,
        "{FRAMES} bulk frames took {allocs} buffer allocations: buffers are not reused"
    );
}

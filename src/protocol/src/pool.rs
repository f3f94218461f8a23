//! Reusable buffers for bulk data that leaves as frame trailers.
//!
//! A bulk transfer sends chunk after chunk, and each chunk stays alive until the connection's
//! writer has written it. Allocating a fresh chunk-sized buffer for each costs more than the copy
//! into it (the allocator hands large blocks back to the kernel and every page faults in again),
//! so a transfer takes its buffers from a [`ChunkPool`] and they come back when written.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

/// A bounded set of reusable chunk buffers. Cheap to clone; clones share the buffers.
#[derive(Debug, Clone)]
pub struct ChunkPool {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
    capacity: usize,
    keep: usize,
}

impl ChunkPool {
    /// A pool of buffers of `capacity` bytes that keeps at most `keep` free ones.
    pub fn new(capacity: usize, keep: usize) -> Self {
        Self {
            free: Arc::default(),
            capacity,
            keep,
        }
    }

    /// A buffer with room for at least `capacity` bytes. A reused buffer keeps the length and
    /// contents it had (they are initialised, so `resize` need not zero them again); callers that
    /// append call `clear` first.
    pub fn take(&self) -> Vec<u8> {
        self.lock()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.capacity))
    }

    /// Hands `buf` out as `Bytes` without copying it; it returns to the pool once the last
    /// clone or slice of those `Bytes` is dropped.
    pub fn share(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: self.clone(),
        })
    }

    /// Free buffers held right now.
    pub fn free_buffers(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        // Only whole buffers are pushed and popped: a panic elsewhere cannot leave it torn.
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A buffer out of its pool, owned by the `Bytes` made from it.
#[derive(Debug)]
struct Pooled {
    buf: Vec<u8>,
    pool: ChunkPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut free = self.pool.lock();
        if free.len() < self.pool.keep && self.buf.capacity() >= self.pool.capacity {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_return_when_the_last_handle_drops() {
        let pool = ChunkPool::new(1024, 2);
        let mut buf = pool.take();
        buf.extend_from_slice(b"hello");
        let ptr = buf.as_ptr();
        let bytes = pool.share(buf);
        let slice = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(pool.free_buffers(), 0, "a slice still holds the buffer");
        assert_eq!(&slice[..], b"el");
        drop(slice);
        assert_eq!(pool.free_buffers(), 1);
        let again = pool.take();
        assert_eq!(again.as_ptr(), ptr, "the same allocation comes back");
        assert_eq!(again, b"hello", "contents are kept (initialised)");
    }

    #[test]
    fn keeps_at_most_its_limit() {
        let pool = ChunkPool::new(16, 1);
        let a = pool.share(pool.take());
        let b = pool.share(pool.take());
        drop((a, b));
        assert_eq!(pool.free_buffers(), 1);
    }
}

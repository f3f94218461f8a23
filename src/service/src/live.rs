//! The sandboxes this service holds a connection to: the ones it created (a disposable one
//! lives as long as its entry here, through its creator link) and the long-lived ones it
//! attached to. One connection per sandbox, shared by every request on it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use luminaguard_backend::Sandbox;
use luminaguard_core::SandboxId;

/// One sandbox and its agent connection.
#[derive(Debug)]
pub(crate) struct Entry {
    pub sandbox: Sandbox,
    /// Nothing has run in it yet: every OOM kill or seccomp denial it counts is the first
    /// command's (its "before" counts need not be read).
    fresh: AtomicBool,
    /// The head of the latest command's output, stdout and stderr as they came: what a
    /// person answering the sandbox's Diff Card is shown of the run.
    output_head: std::sync::Mutex<OutputHead>,
}

/// At most this much of a command's output is kept for its card.
pub(crate) const OUTPUT_HEAD: usize = 4096;

/// The first [`OUTPUT_HEAD`] bytes of a command's output, and whether there was more.
#[derive(Debug, Default, Clone)]
pub(crate) struct OutputHead {
    pub bytes: Vec<u8>,
    pub cut: bool,
}

impl Entry {
    pub fn new(sandbox: Sandbox, fresh: bool) -> Self {
        Self {
            sandbox,
            fresh: AtomicBool::new(fresh),
            output_head: std::sync::Mutex::default(),
        }
    }

    fn head(&self) -> std::sync::MutexGuard<'_, OutputHead> {
        self.output_head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A command starts: the head is its.
    pub fn clear_output(&self) {
        *self.head() = OutputHead::default();
    }

    /// Keeps what fits of `chunk` in the head.
    pub fn keep_output(&self, chunk: &[u8]) {
        let mut h = self.head();
        let room = OUTPUT_HEAD.saturating_sub(h.bytes.len());
        h.bytes.extend_from_slice(&chunk[..room.min(chunk.len())]);
        h.cut |= chunk.len() > room;
    }

    /// The latest command's output head.
    pub fn output(&self) -> OutputHead {
        self.head().clone()
    }

    /// Whether this is the sandbox's first command (true once).
    pub fn take_fresh(&self) -> bool {
        self.fresh.swap(false, Ordering::AcqRel)
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<SandboxId, Arc<Entry>>,
    /// Sandboxes being destroyed: a second destroy (or an attach) of one is refused while the
    /// first runs.
    destroying: HashSet<SandboxId>,
}

/// The table of connected sandboxes.
#[derive(Debug, Default)]
pub(crate) struct Live {
    inner: Mutex<Inner>,
}

impl Live {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves the maps consistent (each operation is one
        // insert or remove): carry on with them.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The entry for `id` if its connection is still open.
    pub fn get(&self, id: &SandboxId) -> Option<Arc<Entry>> {
        let mut inner = self.lock();
        match inner.entries.get(id) {
            Some(e) if !e.sandbox.client().is_closed() => Some(Arc::clone(e)),
            Some(_) => {
                // The sandbox went away (or its agent dropped us): forget this connection; a
                // long-lived sandbox is attached again on the next request.
                inner.entries.remove(id);
                None
            }
            None => None,
        }
    }

    /// Records `entry`; returns the entry that is kept (an earlier one for the same sandbox
    /// wins, so that two racing attaches share one connection). `None` while `id` is being
    /// destroyed.
    pub fn insert(&self, entry: Entry) -> Option<Arc<Entry>> {
        let mut inner = self.lock();
        let id = entry.sandbox.id.clone();
        if inner.destroying.contains(&id) {
            return None;
        }
        if let Some(have) = inner.entries.get(&id)
            && !have.sandbox.client().is_closed()
        {
            return Some(Arc::clone(have));
        }
        let entry = Arc::new(entry);
        inner.entries.insert(id, Arc::clone(&entry));
        Some(entry)
    }

    /// Starts destroying `id`: takes its entry out (if any). `Err(())` when a destroy of it is
    /// already under way. [`Live::end_destroy`] must follow.
    pub fn begin_destroy(&self, id: &SandboxId) -> Result<Option<Arc<Entry>>, ()> {
        let mut inner = self.lock();
        if !inner.destroying.insert(id.clone()) {
            return Err(());
        }
        Ok(inner.entries.remove(id))
    }

    pub fn end_destroy(&self, id: &SandboxId) {
        self.lock().destroying.remove(id);
    }

    /// Every entry (for a daemon that stops).
    pub fn drain(&self) -> Vec<Arc<Entry>> {
        self.lock().entries.drain().map(|(_, e)| e).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

//! Feeds arbitrary bytes to the agent-side frame decoder. Run with
//! `cargo +nightly fuzz run frame_decoder fuzz/corpus/frame_decoder` from the repository root
//! (see docs/protocol.md); the corpus is replayed in CI by the protocol crate's tests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    luminaguard_protocol::frame::fuzz_decode_all(data);
});
